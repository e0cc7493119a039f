package edge

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkRegionBudgets: two regions, "near" (20ms of round trip to the
// primary, visible budget 500ms) and "far" (150ms, visible budget 1s),
// their budgets from a budget file; in each an edge steered by the budget
// and an edge flushing every second, side by side in one run, each behind
// its own link to one primary and pushed up to 300 insights/s (3 every
// 10ms, one push at a time: the rate reached is reported).
// Per region and shipper it reports the push acknowledgement p99 (as the
// pusher sees it), the visible p99 (push to the row's insert in the
// primary, by PostgreSQL's clock: independent of the edge), the edge's own
// end_to_end p99 (to the ack, half a round trip later), and the mean WAL
// records per batch.
//
// The budget-steered edges should be within their visible budget with
// batches as large as it allows; the fixed flush misses both budgets (its
// insights wait up to 1s before the round trip). LONGHAUL_BENCH_SECONDS
// sets how long the pushes last (default 20).
//
//	go test ./edge -run '^$' -bench RegionBudgets -benchtime 1x
func BenchmarkRegionBudgets(b *testing.B) {
	secs := 20
	if testing.Short() {
		secs = 8
	}
	if v, err := strconv.Atoi(os.Getenv("LONGHAUL_BENCH_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	const file = `{"regions": {
		"near": {"ack_p99": "50ms", "visible_p99": "500ms"},
		"far":  {"ack_p99": "50ms", "visible_p99": "1s"}
	}}`
	regions := []struct {
		name string
		rtt  time.Duration
	}{{"near", 20 * time.Millisecond}, {"far", 150 * time.Millisecond}}
	modes := []string{"budget", "fixed-1s"}

	type figures struct{ ack, visible, e2e, perBatch, over float64 }
	sum := map[string]*figures{}
	for range b.N {
		b.StopTimer()
		rig := newBudgetRig(b)
		var edges []*budgetEdge
		budgets := map[string]Budget{}
		for _, r := range regions {
			bu, err := ParseBudgetFile([]byte(file), r.name)
			if err != nil {
				b.Fatal(err)
			}
			budgets[r.name] = bu
			for _, mode := range modes {
				cfg := Config{Region: r.name, NodeID: mode, Budget: bu, Shipper: ShipperConfig{MaxBatchAge: bu.VisibleP99}}
				if mode == "fixed-1s" {
					cfg.Shipper.FixedInterval = time.Second
				}
				e := rig.edge(r.name+"-"+mode, r.rtt, cfg)
				edges = append(edges, e)
			}
		}
		b.StartTimer()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, e := range edges {
			wg.Go(func() { e.push(ctx, 10*time.Millisecond, 3) })
		}
		time.Sleep(time.Duration(secs) * time.Second)
		cancel()
		wg.Wait()
		b.StopTimer()
		for _, e := range edges {
			rig.waitVisible(e, time.Minute)
		}
		var table strings.Builder
		fmt.Fprintf(&table, "\n%-6s %-9s %6s %7s %6s %9s %11s %7s %8s %9s %s\n",
			"region", "shipper", "rtt", "budget", "ins/s", "ack p99", "visible p99", "over", "e2e p99", "records/b", "WithinBudget")
		for i, e := range edges {
			r := regions[i/len(modes)]
			bu := budgets[r.name]
			_, took := rig.visible(e)
			over := 0
			for _, d := range took {
				if d > bu.VisibleP99 {
					over++
				}
			}
			e.mu.Lock()
			ack, rate := percentile(e.acks, 0.99), float64(e.pushed)/float64(secs)
			e.mu.Unlock()
			rep := e.sys.edge.Budget()
			_, why := e.sys.edge.WithinBudget()
			f := figures{ack: ack.Seconds() * 1e3, visible: percentile(took, 0.99).Seconds() * 1e3,
				e2e: rep.Visible.P99Seconds * 1e3, perBatch: e.batchMean(), over: 100 * float64(over) / float64(max(len(took), 1))}
			fmt.Fprintf(&table, "%-6s %-9s %6v %7v %6.0f %7.1fms %9.0fms %6.1f%% %6.0fms %9.1f %s\n",
				r.name, modes[i%len(modes)], r.rtt, bu.VisibleP99, rate, f.ack, f.visible, f.over, f.e2e, f.perBatch, why)
			s := sum[e.name]
			if s == nil {
				s = &figures{}
				sum[e.name] = s
			}
			s.ack, s.visible, s.e2e, s.perBatch, s.over = s.ack+f.ack, s.visible+f.visible, s.e2e+f.e2e, s.perBatch+f.perBatch, s.over+f.over
		}
		b.Logf("%ds of pushes (3 insights every 10ms, one pusher per edge):%s", secs, table.String())
	}
	for name, s := range sum {
		n := float64(b.N)
		b.ReportMetric(s.ack/n, name+"-ack-p99-ms")
		b.ReportMetric(s.visible/n, name+"-visible-p99-ms")
		b.ReportMetric(s.perBatch/n, name+"-records/batch")
		b.ReportMetric(s.over/n, name+"-%over-budget")
	}
}
