package checker

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"
)

// BenchmarkPipeline is the lanes benchmark (see BenchPipeline): run it with
// -benchtime=1x. LONGHAUL_BENCH_JOBS and LONGHAUL_BENCH_SECONDS resize it.
func BenchmarkPipeline(b *testing.B) {
	cfg := BenchConfig{}
	if n, err := strconv.Atoi(os.Getenv("LONGHAUL_BENCH_JOBS")); err == nil {
		cfg.Jobs = n
	}
	if n, err := strconv.Atoi(os.Getenv("LONGHAUL_BENCH_SECONDS")); err == nil {
		cfg.Duration = time.Duration(n) * time.Second
	}
	for b.Loop() {
		res, err := BenchPipeline(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		by := map[string]BenchResult{}
		for _, r := range res {
			by[r.Mode] = r
			b.Logf("%-10s %6d jobs in %6.1fs = %7.1f scans/s; fast p50 %6.3fs p99 %6.3fs (alone %6.3fs, %d unfinished)",
				r.Mode, r.Jobs, r.Seconds, r.ScansPerSecond, r.FastP50, r.FastP99, r.FastP99Alone, r.Truncated)
			b.ReportMetric(r.ScansPerSecond, r.Mode+"-scans/s")
			b.ReportMetric(r.FastP99*1000, r.Mode+"-fast-p99-ms")
		}
		b.ReportMetric(by["parallel"].ScansPerSecond/by["sequential"].ScansPerSecond, "parallel/sequential")
		b.ReportMetric(by["lanes"].ScansPerSecond/by["sequential"].ScansPerSecond, "lanes/sequential")
		b.ReportMetric(by["lanes"].FastP99/by["lanes"].FastP99Alone, "lanes-p99/alone")
		b.ReportMetric(by["parallel"].FastP99/by["parallel"].FastP99Alone, "parallel-p99/alone")
	}
}
