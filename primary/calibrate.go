package primary

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// Synthetic returns n insights of one scan with distinct keys and details of
// about detailsBytes bytes, numbered from offset: the same offset gives the
// same keys, so a second call with a later time updates every row.
func Synthetic(n, offset, detailsBytes int, observed time.Time, scanID string) []*longhaulv1.BatchInsight {
	pad := strings.Repeat("x", max(0, detailsBytes-60))
	out := make([]*longhaulv1.BatchInsight, n)
	for i := range out {
		k := offset + i
		out[i] = &longhaulv1.BatchInsight{
			AccountId: fmt.Sprintf("account-%04d", k%1000), Asset: fmt.Sprintf("host-%06d.example.com", k/1000),
			Kind: "tls.expiry", Subject: fmt.Sprintf("port-%d", k%7),
			Severity:             longhaulv1.Severity(1 + k%4),
			Details:              fmt.Appendf(nil, `{"id": %d, "days_left": %d, "note": "%s"}`, k, k%90, pad),
			ObservedAtUnixMicros: observed.UnixMicro(), ScanId: scanID, Checker: "synthetic",
		}
	}
	return out
}

// CalibrateOptions configures Calibrate.
type CalibrateOptions struct {
	// Sizes are the batch sizes measured, ascending. Default 250 … 16,000.
	Sizes []int
	// Rounds per size and path; the median counts. Default 5.
	Rounds int
	// DetailsBytes is the size of each row's details. Default 200.
	DetailsBytes int
}

// Calibration is what Calibrate measured.
type Calibration struct {
	Threshold int
	Points    []CalibrationPoint
}

// CalibrationPoint is the median time of each path at one size.
type CalibrationPoint struct {
	Size         int
	Unnest, Copy time.Duration
}

func (c Calibration) String() string {
	var b strings.Builder
	for i, p := range c.Points {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%d:unnest=%s/copy=%s", p.Size, p.Unnest.Round(time.Microsecond), p.Copy.Round(time.Microsecond))
	}
	return b.String()
}

// Calibrate measures, on the database behind conn's config, the batch size
// from which COPY into the staging table and one merge beats one UNNEST
// upsert (each batch half new rows, half updates), and returns it. It works
// on temporary copies of the tables on a connection of its own, so it leaves
// nothing behind.
func Calibrate(ctx context.Context, pool *pgxpool.Pool, opts CalibrateOptions) (Calibration, error) {
	// A connection of its own: the temporary tables must not outlive the
	// calibration, nor meet the pool's staging table.
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
	if err != nil {
		return Calibration{}, fmt.Errorf("primary: calibrate: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return calibrate(ctx, conn, opts)
}

func calibrate(ctx context.Context, conn *pgx.Conn, opts CalibrateOptions) (Calibration, error) {
	if len(opts.Sizes) == 0 {
		opts.Sizes = []int{250, 500, 1000, 2000, 4000, 8000, 16000}
	}
	if opts.Rounds == 0 {
		opts.Rounds = 5
	}
	if opts.DetailsBytes == 0 {
		opts.DetailsBytes = 200
	}
	// The temporary "insights" comes first in the search path, so the
	// applier's own statements write to it.
	for _, q := range []string{
		sqlStagingBuffers,
		`CREATE TEMP TABLE insights (LIKE insights INCLUDING ALL)`,
		sqlCreateStaging,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return Calibration{}, fmt.Errorf("primary: calibrate: %w", err)
		}
	}
	var cal Calibration
	offset := 0
	for _, size := range opts.Sizes {
		p := CalibrationPoint{Size: size}
		var unnest, copies []time.Duration
		// The two paths alternate, round after round, so that the machine's
		// drift weighs on both alike.
		for round := range opts.Rounds {
			for i := range 2 {
				path := []Path{PathUnnest, PathCopy}[(i+round)%2]
				// Half the rows update the previous batch's, half are new.
				rows := prepare(Synthetic(size, offset+size/2, opts.DetailsBytes, time.Now(), "calibrate"), nil).rows
				offset += size / 2
				d, err := timeWrite(ctx, conn, path, rows)
				if err != nil {
					return Calibration{}, fmt.Errorf("primary: calibrate %s at %d rows: %w", path, size, err)
				}
				if path == PathUnnest {
					unnest = append(unnest, d)
				} else {
					copies = append(copies, d)
				}
			}
		}
		slices.Sort(unnest)
		slices.Sort(copies)
		p.Unnest, p.Copy = unnest[len(unnest)/2], copies[len(copies)/2]
		cal.Points = append(cal.Points, p)
	}
	cal.Threshold = crossover(cal.Points)
	return cal, nil
}

// crossover is the smallest measured size from which COPY is at least as
// fast as UNNEST at that size and every larger one.
func crossover(points []CalibrationPoint) int {
	t := 0
	for i := len(points) - 1; i >= 0; i-- {
		if points[i].Copy > points[i].Unnest {
			break
		}
		t = points[i].Size
	}
	if t == 0 { // COPY never won: keep it for batches beyond the largest size
		t = points[len(points)-1].Size * 2
	}
	return t
}

// timeWrite writes prepared rows by one path in a transaction of their own
// and returns how long it took (the benchmark and the calibration use it).
func timeWrite(ctx context.Context, conn *pgx.Conn, path Path, rows []row) (time.Duration, error) {
	threshold := 1 << 30
	if path == PathCopy {
		threshold = 1
	}
	start := time.Now()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	w := writer{a: &Applier{cfg: ApplierConfig{CopyThreshold: threshold}}, tx: tx}
	if err := w.upsert(ctx, rows); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// WriteDirect writes the insights of one call the way the seed's fixed API
// did, with no edge and no ledger: below threshold one UNNEST upsert (one
// statement, one round trip), from it COPY into the staging table and one
// merge in a transaction. Benchmarks use it as the baseline longhaul is
// measured against; conn must not be shared meanwhile.
func WriteDirect(ctx context.Context, conn *pgx.Conn, ins []*longhaulv1.BatchInsight, threshold int) error {
	rows := prepare(ins, nil).rows
	if len(rows) < threshold {
		c := toColumns(rows)
		_, err := conn.Exec(ctx, sqlUnnest, c.account, c.asset, c.kind, c.subject, c.severity, c.details,
			c.scanID, c.checker, c.firstSeen, c.lastSeen, c.hash)
		return err
	}
	if err := ensureStaging(ctx, conn); err != nil {
		return err
	}
	_, err := timeWrite(ctx, conn, PathCopy, rows)
	return err
}
