package writepath

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/longhaul/longhaul/internal/pgtest"
)

// BenchmarkWritepath runs the write-path benchmark on the tests' server
// (the throwaway cluster, or LONGHAUL_TEST_DATABASE_URL) and prints its
// table. By default a short workload of about ten seconds: 200 small
// scans of 50 and one of 20,000 from 32 checkers, 80 ms, pool of 8,
// per_row sampled on 400 rows. LONGHAUL_BENCH_MIXED=1 starts from the mixed
// workload instead (Mixed, about two minutes), and these change one
// setting each: LONGHAUL_BENCH_SCANS, LONGHAUL_BENCH_PER_SCAN,
// LONGHAUL_BENCH_BIG_SCANS, LONGHAUL_BENCH_INSIGHTS (per big scan),
// LONGHAUL_BENCH_CONCURRENCY, LONGHAUL_BENCH_POOL, LONGHAUL_BENCH_SAMPLE,
// LONGHAUL_BENCH_RTT, LONGHAUL_BENCH_SCAN_TIME, LONGHAUL_BENCH_BIG_SCAN_TIME
// (durations), LONGHAUL_BENCH_STRATEGIES (a comma-separated list).
//
//	go test -run '^$' -bench BenchmarkWritepath -benchtime 1x ./bench/writepath/
//	LONGHAUL_BENCH_MIXED=1 go test -run '^$' -bench BenchmarkWritepath -benchtime 1x -timeout 30m ./bench/writepath/
func BenchmarkWritepath(b *testing.B) {
	cfg := Default()
	cfg.Scans, cfg.Insights, cfg.Sample = 200, 20_000, 400
	if os.Getenv("LONGHAUL_BENCH_MIXED") == "1" {
		cfg = Mixed()
	}
	for env, field := range map[string]*int{
		"LONGHAUL_BENCH_SCANS": &cfg.Scans, "LONGHAUL_BENCH_PER_SCAN": &cfg.PerScan,
		"LONGHAUL_BENCH_BIG_SCANS": &cfg.BigScans, "LONGHAUL_BENCH_INSIGHTS": &cfg.Insights,
		"LONGHAUL_BENCH_CONCURRENCY": &cfg.Concurrency, "LONGHAUL_BENCH_POOL": &cfg.Pool,
		"LONGHAUL_BENCH_SAMPLE": &cfg.Sample,
	} {
		if v := os.Getenv(env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				b.Fatalf("%s: %v", env, err)
			}
			*field = n
		}
	}
	for env, field := range map[string]*time.Duration{
		"LONGHAUL_BENCH_RTT": &cfg.RTT, "LONGHAUL_BENCH_SCAN_TIME": &cfg.ScanTime, "LONGHAUL_BENCH_BIG_SCAN_TIME": &cfg.BigScanTime,
	} {
		if v := os.Getenv(env); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				b.Fatalf("%s: %v", env, err)
			}
			*field = d
		}
	}
	if v := os.Getenv("LONGHAUL_BENCH_STRATEGIES"); v != "" {
		cfg.Strategies = strings.Split(v, ",")
	}
	cfg.DatabaseURL = pgtest.Database(b)
	var res Result
	for b.Loop() {
		var err error
		if res, err = Run(context.Background(), cfg); err != nil {
			b.Fatal(err)
		}
	}
	for _, s := range res.Strategies() {
		b.ReportMetric(s.BlockedSeconds, s.Name+"-blocked-s")
		b.ReportMetric(s.BlockedShare, s.Name+"-blocked-share")
		b.ReportMetric(s.VisibleSeconds, s.Name+"-visible-s")
		b.ReportMetric(s.ScansPerSecond, s.Name+"-scans/s")
		b.ReportMetric(s.PushP99Seconds, s.Name+"-push-p99-s")
	}
	os.Stdout.WriteString("\n")
	if err := res.WriteTable(os.Stdout); err != nil {
		b.Fatal(err)
	}
}
