// Package pgtest gives tests a real PostgreSQL: one throwaway cluster per
// test binary (internal/pgcluster), started on first use, and a fresh
// migrated schema or database per test.
//
// Every package whose tests use it calls Main from its TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestApply(t *testing.T) {
//		t.Parallel()
//		pool := pgtest.Pool(t) // schema t_<hex>, migrated, search_path set
//		…
//	}
//
// Main runs the tests, stops the cluster, and then, when the tests passed,
// fails the run if goroutines are left behind (go.uber.org/goleak; pass
// goleak options to Main to ignore known ones).
//
// What each helper gives, all dropped in t.Cleanup:
//
//   - Pool: a *pgxpool.Pool whose connections see only a fresh schema
//     (search_path), migrated with primary/migrate.
//   - URL: a connection string to such a schema (search_path in the options
//     parameter), for code under test that opens its own pool, such as a
//     primary process started as a child.
//   - Database: a connection string to a fresh, migrated database, for tests
//     that count catalog rows (pg_class and pg_attribute are per database).
//   - Cluster: the cluster itself, for tests that stop and restart the
//     server. It is shared by every test of the binary: such a test must not
//     run in parallel with the others.
//
// # Environment
//
//   - LONGHAUL_TEST_DATABASE_URL: use this server (a postgres:// URL of a
//     superuser, which may create schemas and databases) instead of
//     starting one. Cluster skips its tests then.
//   - CI: when the PostgreSQL binaries are missing and no URL is given, a
//     test that needs the database fails when CI is set (non-empty) and is
//     skipped otherwise, with the same message saying how to install them.
//
// If the test binary dies without returning from m.Run (a panic, a test
// timeout), the server dies with it (parent-death signal), but its
// directory under /tmp stays behind.
package pgtest
