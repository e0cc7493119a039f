package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start starts a cluster for one test, skipping the test (failing it under
// CI) when the binaries are missing.
func start(t *testing.T, opts Options) *Cluster {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if errors.Is(err, ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
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

func mustExec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func show(t *testing.T, conn *pgx.Conn, name string) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(context.Background(), "SHOW "+name).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestStartConnectStop(t *testing.T) {
	c := start(t, Options{Settings: map[string]string{"work_mem": "8MB"}})
	ctx := context.Background()

	conn := connect(t, c.URL(Database))
	for name, want := range map[string]string{
		"fsync":           "on",
		"max_connections": "200",
		"shared_buffers":  "128MB",
		"work_mem":        "8MB",
		"server_encoding": "UTF8",
	} {
		if got := show(t, conn, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	mustExec(t, conn, "CREATE TABLE t (x int)")

	// The unix socket works too, and its path fits in sun_path.
	if n := len(c.SocketDir()) + len(socketFile); n > maxSocketPath {
		t.Errorf("socket path %d bytes long", n)
	}
	sock := connect(t, fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d", Database, c.SocketDir(), c.Port()))
	var db string
	if err := sock.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil || db != Database {
		t.Fatalf("over the socket: database %q, %v", db, err)
	}
	conn.Close(ctx)
	sock.Close(ctx)

	if _, err := os.Stat(c.LogFile()); err != nil {
		t.Errorf("log file: %v", err)
	}
	dir := filepath.Dir(c.DataDir())
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory left after Stop: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(short, c.URL(Database)); err == nil {
		conn.Close(ctx)
		t.Error("server still answers after Stop")
	}
	if err := c.Restart(ctx); err == nil {
		t.Error("Restart after Stop succeeded")
	}
}

func TestStopImmediateRestartKeepsData(t *testing.T) {
	c := start(t, Options{})
	ctx := context.Background()

	conn := connect(t, c.URL(Database))
	mustExec(t, conn, "CREATE TABLE t (x int)")
	mustExec(t, conn, "INSERT INTO t SELECT generate_series(1, 1000)")
	conn.Close(ctx)

	port := c.Port()
	if err := c.StopImmediate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.DataDir(), "PG_VERSION")); err != nil {
		t.Fatalf("data gone after StopImmediate: %v", err)
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Port() != port {
		t.Errorf("port changed: %d → %d", port, c.Port())
	}
	conn = connect(t, c.URL(Database))
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1000 {
		t.Fatalf("after restart: %d rows, %v", n, err)
	}
	conn.Close(ctx)

	// Restart of a running cluster stops it first.
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	conn = connect(t, c.URL(Database))
	mustExec(t, conn, "SELECT 1 FROM t LIMIT 1")
}

func TestGivenDirIsReusedAndKept(t *testing.T) {
	// Not t.TempDir: its 0700 parent is closed to the postgres user when the
	// tests run as root.
	parent, err := os.MkdirTemp(shortTempDir(), "lhk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "cluster")
	ctx := context.Background()

	c := start(t, Options{Dir: dir, Keep: true})
	conn := connect(t, c.URL(Database))
	mustExec(t, conn, "CREATE TABLE kept (x int)")
	conn.Close(ctx)
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Fatalf("Keep: data gone: %v", err)
	}

	// Without Keep, a data directory that was there before Start stays too.
	c = start(t, Options{Dir: dir})
	conn = connect(t, c.URL(Database))
	mustExec(t, conn, "SELECT * FROM kept")
	conn.Close(ctx)
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Fatalf("pre-existing data removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres.log")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("log left behind: %v", err)
	}
}

func TestMissingBinaries(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	old := debianBinGlob
	debianBinGlob = filepath.Join(t.TempDir(), "*", "bin")
	t.Cleanup(func() { debianBinGlob = old })

	_, err := Start(context.Background(), Options{})
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("err = %v, want ErrNotInstalled", err)
	}
	for _, want := range []string{"apt-get install -y postgresql", "LONGHAUL_TEST_DATABASE_URL", "--database-url"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{
		{Port: -1},
		{Port: 70000},
		{Settings: map[string]string{"port": "1"}},
		{Settings: map[string]string{"unix_socket_directories": "/x"}},
		{Settings: map[string]string{"": "x"}},
	} {
		if err := o.validate(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func TestVersionOrder(t *testing.T) {
	if !(versionOf("/usr/lib/postgresql/10/bin") > versionOf("/usr/lib/postgresql/9.6/bin")) {
		t.Error("10 must sort above 9.6")
	}
	if versionOf("/usr/lib/postgresql/x/bin") >= 0 {
		t.Error("a non-version must sort last")
	}
}
