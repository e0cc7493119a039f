package primary

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// BenchmarkShipParallel: one edge's backlog (500,000 insights,
// LONGHAUL_BENCH_INSIGHTS to change, in batches of 15,000 as the edge's
// 4 MiB batches hold) sent on one stream to a primary on loopback, with its
// batches written one at a time and two at a time (ServerConfig.Parallel).
// It reports the insights applied per second, from the first batch sent to
// the last acknowledgement.
//
//	go test -run '^$' -bench BenchmarkShipParallel -benchtime 1x ./primary/
func BenchmarkShipParallel(b *testing.B) {
	n := 500000
	if s, err := strconv.Atoi(os.Getenv("LONGHAUL_BENCH_INSIGHTS")); err == nil && s > 0 {
		n = s
	}
	const perBatch = 15000
	for _, parallel := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("parallel=%d", parallel), func(b *testing.B) {
			for i := range b.N {
				b.StopTimer() // the service and the batches are made outside the clock
				svc := startService(b, ServerConfig{Parallel: parallel})
				cc := dial(b, svc.Addr())
				ctx := context.Background()
				edge := fmt.Sprintf("edge-%d", i)
				var batches []*longhaulv1.Batch
				observed := time.Now()
				for k := 0; k*perBatch < n; k++ {
					lo, hi := k*perBatch, min(n, (k+1)*perBatch)
					batches = append(batches, &longhaulv1.Batch{EdgeId: edge, FirstSeq: uint64(lo + 1), LastSeq: uint64(hi),
						Insights: Synthetic(hi-lo, lo, 200, observed, "scan-bench")})
				}
				b.StartTimer()
				start := time.Now()
				stream, _ := open(ctx, b, cc, edge)
				errc := make(chan error, 1)
				go func() {
					for _, batch := range batches {
						if err := stream.Send(&longhaulv1.ShipRequest{Kind: &longhaulv1.ShipRequest_Batch{Batch: batch}}); err != nil {
							errc <- err
							return
						}
					}
					errc <- nil
				}()
				for range batches {
					m, err := stream.Recv()
					if err != nil {
						b.Fatal(err)
					}
					if st := m.GetAck().GetStatus(); st != longhaulv1.Ack_APPLIED {
						b.Fatalf("ack %v, want APPLIED", m.GetAck())
					}
				}
				took := time.Since(start)
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
				_ = stream.CloseSend()
				b.ReportMetric(float64(n)/took.Seconds(), "insights/s")
			}
		})
	}
}
