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
			for _, by := range []string{"perrow", "unnest", "copy", "hybrid", "plaincopy"} {
				if by == "plaincopy" && mode == "conflict" {
					continue // the physical limit: COPY into an empty table
				}
				b.Run(fmt.Sprintf("rows=%d/%s/%s", size, mode, by), func(b *testing.B) {
					d, extra := benchOne(ctx, b, c, size, mode, by, cal.Threshold)
					perBatch[key{size, mode, by}] = d
					extrapolated[key{size, mode, by}] = extra
				})
			}
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

// benchOne writes batches of size rows by one strategy and returns the
// median time per batch (and whether it was extrapolated from a sample).
func benchOne(ctx context.Context, b *testing.B, conn *pgx.Conn, size int, mode, by string, threshold int) (time.Duration, bool) {
	reps := max(1, min(9, 20000/size))
	table := "insights"
	if by == "plaincopy" {
		table = "plain_copy"
	}
	if _, err := conn.Exec(ctx, `TRUNCATE `+table); err != nil {
		b.Fatal(err)
	}
	n := size
	extrapolated := false
	if by == "perrow" && n > perRowSample {
		n, extrapolated = perRowSample, true
	}
	observed := time.Now()
	if mode == "conflict" { // every row of every batch updates a stored one
		if _, err := timeWrite(ctx, conn, PathCopy, prepare(Synthetic(n, 0, 200, observed, "seed"), nil).rows); err != nil {
			b.Fatal(err)
		}
	}
	var times []time.Duration
	for i := range reps {
		offset := 0
		if mode == "fresh" {
			offset = (i + 1) * n
		}
		observed = observed.Add(time.Second)
		rows := prepare(Synthetic(n, offset, 200, observed, fmt.Sprint("scan-", i)), nil).rows
		if by == "plaincopy" {
			if _, err := conn.Exec(ctx, `TRUNCATE plain_copy`); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
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
			_, err = conn.CopyFrom(ctx, pgx.Identifier{"plain_copy"}, stagingColumns[:], &copySource{rows: rows})
		}
		d := time.Since(start)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		times = append(times, d)
	}
	slices.Sort(times)
	med := times[len(times)/2]
	if extrapolated {
		med = med * time.Duration(size) / time.Duration(n)
	}
	b.ReportMetric(float64(med.Microseconds())/1000, "ms/batch")
	b.ReportMetric(float64(size)/med.Seconds(), "rows/s")
	return med, extrapolated
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
