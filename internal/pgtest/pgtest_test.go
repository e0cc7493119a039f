package pgtest_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/longhaul/longhaul/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func scalar[T any](t *testing.T, db querier, sql string, args ...any) T {
	t.Helper()
	var v T
	if err := db.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func TestPoolSchemasAreIsolated(t *testing.T) {
	var (
		inserted sync.WaitGroup
		mu       sync.Mutex
		schemas  []string
	)
	inserted.Add(2)
	t.Run("group", func(t *testing.T) {
		for _, account := range []string{"acct-a", "acct-b"} {
			t.Run(account, func(t *testing.T) {
				t.Parallel()
				ok := false
				defer func() {
					if !ok {
						inserted.Done() // do not leave the other subtest waiting
					}
				}()
				pool := pgtest.Pool(t)
				ctx := context.Background()

				schema := scalar[string](t, pool, "SELECT current_schema()")
				if !strings.HasPrefix(schema, "t_") {
					t.Fatalf("current_schema() = %q, want t_…", schema)
				}
				if got := scalar[string](t, pool, "SHOW search_path"); got != schema {
					t.Errorf("search_path = %q, want only %q", got, schema)
				}
				if n := scalar[int](t, pool, `SELECT count(*) FROM information_schema.tables
					WHERE table_schema = current_schema() AND table_name = 'insights'`); n != 1 {
					t.Fatalf("insights table in %s: %d", schema, n)
				}
				mu.Lock()
				schemas = append(schemas, schema)
				mu.Unlock()

				_, err := pool.Exec(ctx, `INSERT INTO insights (account_id, asset, kind, subject, severity,
					details, scan_id, checker, first_seen_at, last_seen_at, details_hash)
					VALUES ($1, 'example.com', 'tls', 'cert', 'low', '{}', 'scan-1', 'tls', now(), now(), 0)`, account)
				if err != nil {
					t.Fatal(err)
				}
				ok = true
				inserted.Done()
				waitTimeout(t, &inserted, time.Minute)

				// Both subtests have inserted: each sees only its own row.
				rows, err := pool.Query(ctx, "SELECT account_id FROM insights")
				if err != nil {
					t.Fatal(err)
				}
				accounts, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					t.Fatal(err)
				}
				if len(accounts) != 1 || accounts[0] != account {
					t.Errorf("rows seen in %s: %v, want [%s]", schema, accounts, account)
				}
			})
		}
	})
	if t.Failed() || len(schemas) != 2 {
		return
	}
	if schemas[0] == schemas[1] {
		t.Fatalf("both subtests got schema %s", schemas[0])
	}
	// The subtests are over: their schemas are gone.
	conn := connect(t, pgtest.URL(t))
	if n := scalar[int](t, conn, "SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)", schemas); n != 0 {
		t.Errorf("%d schemas left after the subtests ended: %v", n, schemas)
	}
}

func TestURL(t *testing.T) {
	t.Parallel()
	u := pgtest.URL(t)
	if !strings.Contains(u, "options=-c%20search_path%3Dt_") {
		t.Errorf("URL %s: want search_path in options", u)
	}
	conn := connect(t, u)
	schema := scalar[string](t, conn, "SELECT current_schema()")
	if !strings.HasPrefix(schema, "t_") {
		t.Fatalf("current_schema() = %q", schema)
	}
	if reg := scalar[*string](t, conn, "SELECT to_regclass('insights')::text"); reg == nil {
		t.Error("no insights table on the search_path")
	}
}

func TestDatabase(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("fresh", func(t *testing.T) {
		conn := connect(t, pgtest.Database(t))
		name = scalar[string](t, conn, "SELECT current_database()")
		if !strings.HasPrefix(name, "t_") {
			t.Fatalf("current_database() = %q", name)
		}
		if reg := scalar[*string](t, conn, "SELECT to_regclass('public.insights')::text"); reg == nil {
			t.Error("no insights table in the new database")
		}
		conn.Close(context.Background()) // the drop would end it anyway (FORCE)
	})
	if name == "" {
		return
	}
	conn := connect(t, pgtest.URL(t))
	if n := scalar[int](t, conn, "SELECT count(*) FROM pg_database WHERE datname = $1", name); n != 0 {
		t.Errorf("database %s left after the subtest ended", name)
	}
}

func TestCluster(t *testing.T) {
	c := pgtest.Cluster(t)
	if c.Port() == 0 || c.DataDir() == "" {
		t.Errorf("cluster: port %d, data %q", c.Port(), c.DataDir())
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func waitTimeout(t *testing.T, wg *sync.WaitGroup, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatal("the other subtest did not get this far")
	}
}
