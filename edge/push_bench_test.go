package edge

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// BenchmarkPushLatency: pushes of 50 insights from 1, 16 and 64 concurrent
// pushers to an edge on loopback (gRPC), each acknowledged only once
// fsynced. Reports the acknowledgement latency p50/p99 and how many pushes
// one fsync carried (group commit).
//
//	go test -run '^$' -bench BenchmarkPushLatency -benchtime 3000x ./edge/
func BenchmarkPushLatency(b *testing.B) {
	for _, shipping := range []bool{true, false} {
		for _, pushers := range []int{1, 16, 64} {
			benchPush(b, shipping, pushers)
		}
	}
}

func benchPush(b *testing.B, shipping bool, pushers int) {
	{
		b.Run(fmt.Sprintf("shipping=%v/pushers=%d", shipping, pushers), func(b *testing.B) {
			s := startSystemB(b)
			if !shipping {
				// Only the acknowledgement path: nothing ships meanwhile.
				if err := s.primary.Stop(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			ctx := context.Background()
			reqs := make(chan struct{}, b.N)
			for range b.N {
				reqs <- struct{}{}
			}
			close(reqs)
			var mu sync.Mutex
			var lat []time.Duration
			before := s.edge.WAL().Stats()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for p := range pushers {
				wg.Go(func() {
					n := 0
					for range reqs {
						req := &longhaulv1.PushRequest{}
						for i := range 50 {
							req.Insights = append(req.Insights, insight("bench", "k", fmt.Sprintf("p%d-%d-%d", p, n, i), time.Now().Add(-time.Second)))
						}
						n++
						t := time.Now()
						if _, err := s.ingest.Push(ctx, req); err != nil {
							b.Error(err)
							return
						}
						d := time.Since(t)
						mu.Lock()
						lat = append(lat, d)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			after := s.edge.WAL().Stats()
			slices.Sort(lat)
			pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
			syncs := float64(after.Syncs - before.Syncs)
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "pushes/s")
			b.ReportMetric(syncs/elapsed.Seconds(), "fsyncs/s")
			b.ReportMetric(float64(len(lat))/syncs, "pushes/fsync")
			b.ReportMetric(float64(50*len(lat))/elapsed.Seconds(), "insights/s")
		})
	}
}
