package writepath

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/longhaul/longhaul/primary"
)

// Names of the strategies, in the order Run runs them.
const (
	PerRow   = "per_row"
	Direct   = "direct"
	Longhaul = "longhaul"
)

// Strategies are the strategies Run knows, in the order it runs them.
var Strategies = []string{PerRow, Direct, Longhaul}

// Config configures Run. Start from Default or Mixed and change what you
// need: every field is taken as it is (RTT 0 is no added latency), and Run
// refuses a configuration that makes no sense.
type Config struct {
	// DatabaseURL is a PostgreSQL server to run on, as a postgres:// URL
	// whose host is reached over TCP (the links are TCP proxies). Each
	// strategy gets a schema of its own in that database, dropped when it
	// is done, so the user needs CREATE on the database. Empty: a throwaway
	// cluster from the machine's PostgreSQL binaries (internal/pgcluster),
	// removed at the end.
	DatabaseURL string
	// RTT is the round trip added by the link between the checkers' region
	// and the database's (toxiproxy, half of it each way). Default 80ms.
	RTT time.Duration
	// Scans is the number of small scans of PerScan insights each; BigScans
	// the number of big scans of Insights insights each, spread evenly
	// through the small ones (the first scan is a big one). Defaults: no
	// small scans of 50, one big scan of 500,000 (Mixed: 2,000 small ones).
	Scans, PerScan     int
	BigScans, Insights int
	// ScanTime is how long a small scan scans, on average, before it has
	// its insights, all at once, and makes its write call: each scan's own
	// time is drawn from 0.5 to 1.5 times it (the same for every strategy),
	// as real scans vary and checkers that start together must not stay in
	// step. Default 0: the checkers only write.
	ScanTime time.Duration
	// BigScanTime is how long each big scan scans: it finds its insights
	// evenly over that time, in steps (one every 100ms, at most 100 of
	// them). per_row and direct write them all in one call at the end of
	// the scan; longhaul's checker writes each step's insights as it finds
	// them, through a pushclient.Writer, and closes the Writer at the end.
	// Default 0: the insights are all there at once, and every strategy
	// makes its one write call.
	BigScanTime time.Duration
	// Concurrency is the number of checkers at once; each takes the next
	// scan when the last write call of its previous scan returns. Default
	// 32.
	Concurrency int
	// Pool is the number of database connections: direct's and per_row's
	// pool across the link, and the primary's pool beside the database in
	// longhaul ("the same pool size"). Default 8.
	Pool int
	// Sample is how many rows per_row writes for real, from the pool,
	// concurrently; its figures are extrapolated from them when the
	// workload has more rows (and measured when it has no more). Default
	// 2,000.
	Sample int
	// DetailsBytes is the size of each insight's details. Default 200.
	DetailsBytes int
	// CopyThreshold is the number of rows from which a write goes through
	// COPY instead of one UNNEST upsert, in direct and in the primary.
	// Default primary.DefaultCopyThreshold.
	CopyThreshold int
	// Strategies to run, among PerRow, Direct and Longhaul; they run in
	// that order whatever the order here. Default (nil): all three. The
	// ratios need Direct.
	Strategies []string
	// Logger receives the services' logs (the edge, the primary, the push
	// client, the throwaway cluster). Default: discarded.
	Logger *slog.Logger
	// Progress, when set, is told how far each phase is (rows or insights
	// done out of total). It is called from one goroutine at a time.
	Progress func(phase string, done, total int)
}

// Default is the seed's situation: one scan of 500,000 insights written
// from 80 ms away, pool of 8.
func Default() Config {
	return Config{
		RTT:           80 * time.Millisecond,
		Scans:         0,
		PerScan:       50,
		BigScans:      1,
		Insights:      500_000,
		ScanTime:      0,
		BigScanTime:   0,
		Concurrency:   32,
		Pool:          8,
		Sample:        2000,
		DetailsBytes:  200,
		CopyThreshold: primary.DefaultCopyThreshold,
	}
}

// Mixed is the mixed workload: 2,000 small scans of 50 insights and one
// scan of 500,000 from 32 checkers, 80 ms away, pool of 8. It takes about
// two minutes on a machine of 2 cores (the throwaway cluster's start
// included).
func Mixed() Config {
	c := Default()
	c.Scans = 2000
	return c
}

// Rows is the number of rows (distinct insights) the workload writes.
func (c Config) Rows() int64 {
	return int64(c.Scans)*int64(c.PerScan) + int64(c.BigScans)*int64(c.Insights)
}

func (c Config) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("writepath: "+format, args...))
		}
	}
	check(c.RTT >= 0, "RTT must not be negative, got %s", c.RTT)
	check(c.ScanTime >= 0, "ScanTime must not be negative, got %s", c.ScanTime)
	check(c.BigScanTime >= 0, "BigScanTime must not be negative, got %s", c.BigScanTime)
	check(c.Scans >= 0, "Scans must not be negative, got %d", c.Scans)
	check(c.BigScans >= 0, "BigScans must not be negative, got %d", c.BigScans)
	check(c.Scans+c.BigScans > 0, "no scans to write: Scans and BigScans are both 0")
	check(c.Scans == 0 || c.PerScan > 0, "PerScan must be at least 1, got %d", c.PerScan)
	check(c.BigScans == 0 || c.Insights > 0, "Insights must be at least 1, got %d", c.Insights)
	check(c.Concurrency > 0, "Concurrency must be at least 1, got %d", c.Concurrency)
	check(c.Pool > 0, "Pool must be at least 1, got %d", c.Pool)
	check(c.Sample > 0, "Sample must be at least 1, got %d", c.Sample)
	check(c.DetailsBytes >= 0, "DetailsBytes must not be negative, got %d", c.DetailsBytes)
	check(c.CopyThreshold > 0, "CopyThreshold must be at least 1, got %d", c.CopyThreshold)
	for i, s := range c.Strategies {
		check(slices.Contains(Strategies, s), "unknown strategy %q (want %s, %s or %s)", s, PerRow, Direct, Longhaul)
		check(!slices.Contains(c.Strategies[:i], s), "strategy %q listed twice", s)
	}
	return errors.Join(errs...)
}

// runs reports whether the configuration runs strategy s.
func (c Config) runs(s string) bool {
	return len(c.Strategies) == 0 || slices.Contains(c.Strategies, s)
}
