package edge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/wan"
	"github.com/longhaul/longhaul/primary"
	"github.com/longhaul/longhaul/wal"
)

// BenchmarkShipRTT measures how fast a backlog of distinct insights
// reaches the primary's ledger through links of growing round-trip time,
// with the shipper's defaults (4 MiB batches, 8 in flight). With enough
// batches in flight the figure should barely depend on the RTT: the goal
// is 80 % of the 0 ms figure at 150 ms.
//
// The stream's start (connecting, the hello, the first batch) costs a few
// round trips once; LONGHAUL_BENCH_INSIGHTS sets a larger backlog, over
// which that weighs less.
//
//	go test ./edge -run '^$' -bench ShipRTT -benchtime 1x
func BenchmarkShipRTT(b *testing.B) {
	n := 200_000
	if testing.Short() {
		n = 20_000
	}
	if v, err := strconv.Atoi(os.Getenv("LONGHAUL_BENCH_INSIGHTS")); err == nil && v > 0 {
		n = v
	}
	for _, rtt := range []time.Duration{0, 80 * time.Millisecond, 150 * time.Millisecond} {
		b.Run(fmt.Sprintf("rtt=%dms", rtt.Milliseconds()), func(b *testing.B) {
			var took, idle time.Duration
			for range b.N {
				t, i := shipBenchOnce(b, n, rtt)
				took, idle = took+t, idle+i
			}
			b.ReportMetric(float64(n*b.N)/took.Seconds(), "insights/s")
			b.ReportMetric(took.Seconds()/float64(b.N), "s/backlog")
			b.ReportMetric(idle.Seconds()/float64(b.N), "idle-s/backlog")
		})
	}
}

// shipBenchOnce fills a WAL with n insights, ships it through a link of
// the given RTT to a fresh primary, and returns the time from starting the
// shipper to the primary's ledger reaching the last record, and how much of
// it the primary was not applying a batch (waiting for the first one, or
// for data): the share the link costs, less noisy than the total on a
// shared machine, where PostgreSQL's speed varies from run to run.
func shipBenchOnce(b *testing.B, n int, rtt time.Duration) (took, idle time.Duration) {
	b.StopTimer()
	ctx := context.Background()
	url := pgtest.URL(b)
	log, err := wal.Open(ctx, b.TempDir(), wal.Options{Logger: shipQuiet})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = log.Close() }()
	last := shipBenchFill(b, log, n)

	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	svc, err := primary.Start(ctx, primary.Config{DatabaseURL: url, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Logger: shipQuiet})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = svc.Stop(context.Background()) }()
	link := wan.New(b, svc.Addr())
	link.SetRTT(rtt)
	s, err := NewShipper(log, ShipperConfig{EdgeID: "edge-bench", Primary: link.Addr(), Logger: shipQuiet})
	if err != nil {
		b.Fatal(err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	b.StartTimer()
	start := time.Now()
	go func() { done <- s.Run(runCtx) }()
	for {
		var applied int64
		err := pool.QueryRow(ctx, `SELECT coalesce((SELECT applied_seq FROM edge_ledger WHERE edge_id = 'edge-bench'), 0)`).Scan(&applied)
		if err != nil {
			b.Fatal(err)
		}
		if uint64(applied) == last {
			break
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatalf("ledger at %d after 10 minutes, want %d", applied, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took = time.Since(start)
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	st := s.Stats()
	var apply dto.Metric
	if err := s.m.applyTime.Write(&apply); err != nil {
		b.Fatal(err)
	}
	busy := time.Duration(apply.GetHistogram().GetSampleSum() * float64(time.Second))
	b.Logf("rtt %v: %d insights in %v, the primary applying for %v; %d batches, peak %d in flight, %.1f MB encoded, %.1f MB on the wire, %d reconnects",
		rtt, n, took.Round(time.Millisecond), busy.Round(time.Millisecond),
		st.BatchesSent, st.PeakInFlight, float64(st.PayloadBytes)/1e6, float64(st.WireBytes)/1e6, st.Reconnects)
	return took, max(took-busy, 0)
}

// shipBenchFill appends n insights with distinct keys and about 200 bytes
// of details each, and returns the last sequence.
func shipBenchFill(b *testing.B, log *wal.Log, n int) uint64 {
	b.Helper()
	const group = 1000
	observed := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC).UnixMicro()
	var last uint64
	noise := make([]byte, 60)
	payloads := make([][]byte, 0, group)
	for i := 0; i < n; {
		payloads = payloads[:0]
		for ; len(payloads) < group && i < n; i++ {
			_, _ = rand.Read(noise)
			in := &longhaulv1.BatchInsight{
				AccountId: fmt.Sprint("account-", i%500), Asset: fmt.Sprintf("host-%d.example.com", i/20),
				Kind: "tls.certificate-expiry", Subject: fmt.Sprint("port-", i%20),
				Severity: longhaulv1.Severity_MODERATE,
				Details: fmt.Appendf(nil, `{"issuer": "CN=Example CA %d", "not_after": "2027-01-%02dT00:00:00Z", "serial": %q, "days_left": %d}`,
					i%7, 1+i%28, hex.EncodeToString(noise), i%90),
				ObservedAtUnixMicros: observed + int64(i), ScanId: fmt.Sprint("scan-", i/1000), Checker: "tls",
			}
			p, err := EncodeInsight(in)
			if err != nil {
				b.Fatal(err)
			}
			payloads = append(payloads, p)
		}
		var err error
		if _, last, err = log.Append(context.Background(), payloads); err != nil {
			b.Fatal(err)
		}
	}
	return last
}
