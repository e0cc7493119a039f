package migrate_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/primary/migrate"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestUpFromSeveralProcessesAtOnce: primaries starting together on an empty
// database apply each migration once, and all of them succeed.
func TestUpFromSeveralProcessesAtOnce(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Database(t) // migrated already: start from an empty schema of its own
	setup, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer setup.Close()
	if _, err := setup.Exec(ctx, `CREATE SCHEMA fresh`); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	applied := make([]int, 4)
	errs := make([]error, 4)
	for i := range 4 {
		wg.Go(func() {
			cfg, err := pgxpool.ParseConfig(url)
			if err != nil {
				errs[i] = err
				return
			}
			cfg.ConnConfig.RuntimeParams["search_path"] = "fresh"
			pool, err := pgxpool.NewWithConfig(ctx, cfg) // a process of its own, as far as PostgreSQL can tell
			if err != nil {
				errs[i] = err
				return
			}
			defer pool.Close()
			applied[i], errs[i] = migrate.Up(ctx, pool)
		})
	}
	wg.Wait()
	total := 0
	for i := range 4 {
		if errs[i] != nil {
			t.Fatalf("migrator %d: %v", i, errs[i])
		}
		total += applied[i]
	}
	if total != migrate.Latest() {
		t.Errorf("%d migrations applied in all, want each of %d once", total, migrate.Latest())
	}
	var n int
	if err := setup.QueryRow(ctx, `SELECT count(*) FROM fresh.schema_migrations`).Scan(&n); err != nil || n != migrate.Latest() {
		t.Errorf("schema_migrations holds %d rows (%v), want %d", n, err, migrate.Latest())
	}
}
