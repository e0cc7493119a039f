package primary

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/longhaul/longhaul/internal/pgtest"
)

// TestCopyPathDoesNotGrowTheCatalog: the seed's COPY into a temporary table
// per call bloated pg_class and pg_attribute. After 1,000 batches through
// the COPY path the catalog holds no more rows than after the first.
func TestCopyPathDoesNotGrowTheCatalog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A database of its own: the catalog is per database, and other tests
	// create schemas in theirs.
	cfg, err := pgxpool.ParseConfig(pgtest.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	a, err := NewApplier(pool, ApplierConfig{CopyThreshold: 10})
	if err != nil {
		t.Fatal(err)
	}
	// Rows alone would not show a table created and dropped per batch (its
	// catalog rows die, and dead rows are not counted), so the size of the
	// catalog tables, which dead rows fill until a vacuum, is compared too.
	catalog := func() (classes, attributes, bytes int) {
		t.Helper()
		err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_class), (SELECT count(*) FROM pg_attribute),
			pg_relation_size('pg_class') + pg_relation_size('pg_attribute')`).Scan(&classes, &attributes, &bytes)
		if err != nil {
			t.Fatal(err)
		}
		return classes, attributes, bytes
	}
	batch := func(seq int) {
		// Two at once, so both connections of the pool hold a staging table.
		done := make(chan error, 2)
		for e := range 2 {
			go func() {
				ins := Synthetic(20, seq*20, 200, time.Now(), fmt.Sprintf("scan-%d", seq))
				b := newBatch(fmt.Sprintf("edge-%d", e), uint64(seq), ins)
				res, err := a.Apply(ctx, b)
				if err == nil && res.Path != PathCopy {
					err = fmt.Errorf("batch %d went through %s, want copy", seq, res.Path)
				}
				done <- err
			}()
		}
		for range 2 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
	batch(1)
	classes, attributes, bytes := catalog()
	for seq := 2; seq <= 1000; seq++ {
		batch(seq)
	}
	c2, a2, b2 := catalog()
	t.Logf("after 2 x 1,000 COPY batches: pg_class %d -> %d rows, pg_attribute %d -> %d rows, both %d -> %d bytes",
		classes, c2, attributes, a2, bytes, b2)
	if c2 > classes || a2 > attributes || b2 > bytes {
		t.Errorf("catalog grew: pg_class %d -> %d rows, pg_attribute %d -> %d rows, %d -> %d bytes", classes, c2, attributes, a2, bytes, b2)
	}
}
