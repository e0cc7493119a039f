package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/longhaul/longhaul/internal/pgcluster"
	"github.com/longhaul/longhaul/primary/migrate"
)

// EnvURL names the environment variable with the URL of a server to use
// instead of starting a cluster.
const EnvURL = "LONGHAUL_TEST_DATABASE_URL"

// Timeouts: starting the cluster (initdb included) and each setup or
// cleanup step of a helper.
const (
	startTimeout = 2 * time.Minute
	stepTimeout  = time.Minute
)

var (
	mainCalled atomic.Bool

	setupOnce sync.Once
	cluster   *pgcluster.Cluster // nil when EnvURL is used
	baseURL   string             // the database schemas are made in
	setupErr  error
)

// Main runs the tests of a package, stops the cluster if one was started,
// checks for leaked goroutines when the tests passed, and exits. Call it
// from TestMain. opts are passed to goleak.Find, to ignore goroutines that
// are known to stay.
func Main(m *testing.M, opts ...goleak.Option) {
	os.Exit(run(m, opts))
}

func run(m *testing.M, opts []goleak.Option) int {
	mainCalled.Store(true)
	code := m.Run()
	if cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		err := cluster.Stop(ctx)
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop cluster: %v\n", err)
			code = max(code, 1)
		}
	}
	if code == 0 {
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: goroutines left behind after the tests: %v\n", err)
			code = 1
		}
	}
	return code
}

// ensure starts the cluster (once per test binary) or checks the server
// named by EnvURL, and skips or fails t when neither is possible.
func ensure(t testing.TB) {
	t.Helper()
	if !mainCalled.Load() {
		t.Fatal("pgtest: the package's TestMain must call pgtest.Main(m)")
	}
	setupOnce.Do(setup)
	if errors.Is(setupErr, pgcluster.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skip(setupErr)
	}
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

func setup() {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if u := os.Getenv(EnvURL); u != "" {
		setupErr = checkServer(ctx, u)
		baseURL = u
		return
	}
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		setupErr = err
		return
	}
	cluster, baseURL = c, c.URL(pgcluster.Database)
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "pgtest: PostgreSQL at %s, data in %s\n", baseURL, c.DataDir())
	}
}

// checkServer checks that u is a URL of a superuser, who may create schemas
// and databases.
func checkServer(ctx context.Context, u string) error {
	if p, err := url.Parse(u); err != nil || (p.Scheme != "postgres" && p.Scheme != "postgresql") {
		return fmt.Errorf("pgtest: %s must be a postgres:// URL", EnvURL)
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return fmt.Errorf("pgtest: %s: %w", EnvURL, err)
	}
	defer conn.Close(context.Background())
	var super bool
	if err := conn.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil {
		return fmt.Errorf("pgtest: %s: %w", EnvURL, err)
	}
	if !super {
		return fmt.Errorf("pgtest: %s must connect as a superuser", EnvURL)
	}
	return nil
}

// Pool returns a pool whose connections see only a fresh schema t_<hex>
// (search_path), migrated to the latest version. The pool is closed and the
// schema dropped when t ends.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ensure(t)
	schema := newSchema(t)
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(baseURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close) // runs before the schema's cleanup
	if _, err := migrate.Up(ctx, pool); err != nil {
		t.Fatalf("pgtest: migrate schema %s: %v", schema, err)
	}
	return pool
}

// URL returns a connection string to a fresh schema t_<hex>, migrated to the
// latest version, with search_path set to it in the options parameter (as
// libpq and pgx both understand). The schema is dropped when t ends: close
// what uses it first (cleanups run last-registered first).
func URL(t testing.TB) string {
	t.Helper()
	ensure(t)
	schema := newSchema(t)
	u, err := url.Parse(baseURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("options", strings.TrimSpace(q.Get("options")+" -c search_path="+schema))
	// %20, not +, for the space: libpq does not decode + in a URI.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	migrateURL(t, u.String())
	return u.String()
}

// Database returns a connection string to a fresh database t_<hex>,
// migrated to the latest version. It is dropped (WITH (FORCE): connections
// left open are ended) when t ends.
func Database(t testing.TB) string {
	t.Helper()
	ensure(t)
	name := newName()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if err := adminExec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		if err := adminExec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	u, err := url.Parse(baseURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	migrateURL(t, u.String())
	return u.String()
}

// Cluster returns the cluster the tests run against, to stop and restart it.
// It skips t when the tests use the server named by LONGHAUL_TEST_DATABASE_URL.
// The cluster is shared by the whole test binary: a test that stops it must
// not run in parallel with other tests, and must leave it running.
func Cluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	ensure(t)
	if cluster == nil {
		t.Skipf("pgtest: needs a cluster of its own, but the tests use %s", EnvURL)
	}
	return cluster
}

// newSchema creates a schema t_<hex> and drops it when t ends.
func newSchema(t testing.TB) string {
	t.Helper()
	name := newName()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if err := adminExec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		if err := adminExec(ctx, "DROP SCHEMA IF EXISTS "+name+" CASCADE"); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return name
}

// newName is a fresh schema or database name; it needs no quoting.
func newName() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return "t_" + hex.EncodeToString(b)
}

// adminExec runs one statement on a connection of its own: no pool to keep
// alive across tests, and nothing to break when a test restarts the server.
func adminExec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, baseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// migrateURL brings the schema that u points at to the latest version.
func migrateURL(t testing.TB, u string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := migrate.Up(ctx, conn); err != nil {
		t.Fatalf("pgtest: migrate: %v", err)
	}
}
