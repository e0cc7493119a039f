package primary

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

// perRowSample is how many rows the per-row strategy (the seed's original
// design) writes at most; larger sizes are extrapolated from it.
const perRowSample = 5000

const sqlPerRow = `INSERT INTO insights AS i (` + insertColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)` + onConflict

// BenchmarkApply measures every way of writing a batch at every size, fresh
// and all-conflict, on the throwaway cluster, and prints a table with the
// ratios the project's goals are stated in. Run it with
//
//	go test -run '^$' -bench BenchmarkApply -benchtime 1x ./primary/
//
// LONGHAUL_BENCH_SIZES (e.g. "100,1000") narrows the sizes.
func BenchmarkApply(b *testing.B) {
	ctx := context.Background()
	pool := setupB(b)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	c := conn.Conn()
	for _, q := range []string{`CREATE TABLE plain_copy (LIKE insights INCLUDING ALL)`} {
		if _, err := c.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	// calibrate sets the session up as ensureStaging does.
	cal, err := calibrate(ctx, c, CalibrateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	// calibrate left its temporary insights table in front of the real one.
	if _, err := c.Exec(ctx, `DROP TABLE pg_temp.insights`); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("calibration: crossover at %d rows (%s)\n", cal.Threshold, cal)

	sizes := []int{100, 1000, 10000, 100000, 500000}
	if s := os.Getenv("LONGHAUL_BENCH_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatal(err)
			}
			sizes = append(sizes, n)
		}
	}
	type key struct {
		size     int
		mode, by string
	}
	perBatch := map[key]time.Duration{}
	extrapolated := map[key]bool{}
	for _, size := range sizes {
		for _, mode := range []string{"fresh", "conflict"} {
			b.Run(fmt.Sprintf("rows=%d/%s", size, mode), func(b *testing.B) {
				for by, d := range benchSize(ctx, b, c, size, mode, cal.Threshold) {
					perBatch[key{size, mode, by}] = d
					extrapolated[key{size, mode, by}] = by == "perrow" && size > perRowSample
				}
			})
		}
	}

	var out strings.Builder
	fmt.Fprintf(&out, "\ncrossover found by calibration: %d rows\n", cal.Threshold)
	tw := tabwriter.NewWriter(&out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rows\tmode\tper-row\tUNNEST\tCOPY+merge\thybrid\tplain COPY\thybrid/best\thybrid vs per-row\thybrid/plain COPY\t")
	for _, size := range sizes {
		for _, mode := range []string{"fresh", "conflict"} {
			get := func(by string) time.Duration { return perBatch[key{size, mode, by}] }
			cell := func(by string) string {
				d := get(by)
				if d == 0 {
					return "-"
				}
				s := fmt.Sprintf("%.0f/s", float64(size)/d.Seconds())
				if extrapolated[key{size, mode, by}] {
					s += " (extrapolated)"
				}
				return s
			}
			best := min(get("unnest"), get("copy"))
			plain := cell("plaincopy")
			ratioPlain := "-"
			if p := perBatch[key{size, "fresh", "plaincopy"}]; p > 0 {
				ratioPlain = fmt.Sprintf("%.2fx", get("hybrid").Seconds()/p.Seconds())
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.1fx faster\t%s\t\n", size, mode, cell("perrow"), cell("unnest"),
				cell("copy"), cell("hybrid"), plain, get("hybrid").Seconds()/best.Seconds(),
				get("perrow").Seconds()/get("hybrid").Seconds(), ratioPlain)
		}
	}
	tw.Flush()
	fmt.Print(out.String())
}

// strategies are the ways of writing a batch the benchmark compares.
var strategies = []string{"perrow", "unnest", "copy", "hybrid", "plaincopy"}

// benchSize writes batches of size rows by every strategy, interleaved
// (one batch each, in a rotating order, round after round) so that the
// machine's drift weighs on all of them alike, and returns each one's
// median time per batch. Per-row is measured on perRowSample rows at most
// and scaled up.
func benchSize(ctx context.Context, b *testing.B, conn *pgx.Conn, size int, mode string, threshold int) map[string]time.Duration {
	// Many rounds at small sizes, where a batch takes milliseconds and the
	// machine's noise is as large; three at the largest, so that a
	// checkpoint or an autovacuum landing on one batch does not decide.
	rounds := max(3, min(41, 40000/size))
	for _, q := range []string{`TRUNCATE insights`, `TRUNCATE plain_copy`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	observed := time.Now()
	if mode == "conflict" { // every row of every batch updates a stored one
		if _, err := timeWrite(ctx, conn, PathCopy, prepare(Synthetic(size, 0, 200, observed, "seed"), nil).rows); err != nil {
			b.Fatal(err)
		}
	}
	times := map[string][]time.Duration{}
	offset := size
	for round := range rounds {
		for i := range strategies {
			by := strategies[(i+round)%len(strategies)]
			if by == "plaincopy" && mode == "conflict" {
				continue // the physical limit: COPY into an empty table
			}
			n := size
			if by == "perrow" {
				n = min(size, perRowSample)
			}
			start := 0
			if mode == "fresh" || by == "plaincopy" {
				start, offset = offset, offset+n
			}
			observed = observed.Add(time.Second)
			rows := prepare(Synthetic(n, start, 200, observed, fmt.Sprint("scan-", round)), nil).rows
			if by == "plaincopy" {
				if _, err := conn.Exec(ctx, `TRUNCATE plain_copy`); err != nil {
					b.Fatal(err)
				}
			}
			t := time.Now()
			var err error
			switch by {
			case "perrow":
				err = perRow(ctx, conn, rows)
			case "unnest":
				_, err = timeWrite(ctx, conn, PathUnnest, rows)
			case "copy":
				_, err = timeWrite(ctx, conn, PathCopy, rows)
			case "hybrid":
				path := PathUnnest
				if len(rows) >= threshold {
					path = PathCopy
				}
				_, err = timeWrite(ctx, conn, path, rows)
			case "plaincopy":
				_, err = copyInto(ctx, conn.PgConn(), "plain_copy", rows)
			}
			d := time.Since(t)
			if err != nil {
				b.Fatal(err)
			}
			times[by] = append(times[by], d*time.Duration(size)/time.Duration(n))
		}
	}
	out := map[string]time.Duration{}
	for by, ts := range times {
		slices.Sort(ts)
		out[by] = ts[len(ts)/2]
		b.ReportMetric(float64(size)/out[by].Seconds(), by+"-rows/s")
	}
	return out
}

// perRow is the seed's original design: one INSERT … ON CONFLICT per
// insight, in one transaction per call.
func perRow(ctx context.Context, conn *pgx.Conn, rows []row) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	for _, r := range rows {
		if _, err := tx.Exec(ctx, sqlPerRow, r.In.AccountId, r.In.Asset, r.In.Kind, r.In.Subject, r.Severity, r.In.Details,
			r.In.ScanId, r.In.Checker, time.UnixMicro(r.FirstSeen), time.UnixMicro(r.In.ObservedAtUnixMicros), r.Hash); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}
