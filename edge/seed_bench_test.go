package edge

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/wan"
	"github.com/longhaul/longhaul/primary"
)

// BenchmarkSeedSituation: a checker 80 ms away from PostgreSQL writes one
// scan of 500,000 insights (LONGHAUL_BENCH_INSIGHTS to change), side by
// side in one run:
//
//	direct:   the seed's fix, UNNEST/COPY by threshold straight across the
//	          link, one call per scan (primary.WriteDirect);
//	longhaul: PushStream to an edge in the checker's region, which ships
//	          across the link to the primary beside PostgreSQL.
//
// It reports how long the checker was blocked and how long until every row
// was visible in PostgreSQL.
//
//	go test -run '^$' -bench BenchmarkSeedSituation -benchtime 1x ./edge/
//
// A second case is many small scans (200 of 50 insights, one after the
// other): there the seed's round trips, not the rows, cost the time.
func BenchmarkSeedSituation(b *testing.B) {
	n := 500000
	if s, err := strconv.Atoi(os.Getenv("LONGHAUL_BENCH_INSIGHTS")); err == nil && s > 0 {
		n = s
	}
	b.Run(fmt.Sprintf("scans=1x%d", n), func(b *testing.B) { benchSeed(b, 1, n) })
	b.Run("scans=200x50", func(b *testing.B) { benchSeed(b, 200, 50) })
}

func benchSeed(b *testing.B, scans, perScan int) {
	n := scans * perScan
	const rtt = 80 * time.Millisecond
	ctx := context.Background()
	observed := time.Now().Add(-time.Minute)
	rows := primary.Synthetic(n, 0, 200, observed, "scan-seed")

	// direct: the applier in the checker's region, PostgreSQL across the link.
	directURL := pgtest.URL(b)
	cfg, err := pgxpool.ParseConfig(directURL)
	if err != nil {
		b.Fatal(err)
	}
	pgLink := wan.New(b, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	pgLink.SetRTT(rtt)
	host, port, _ := net.SplitHostPort(pgLink.Addr())
	p, _ := strconv.Atoi(port)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.MaxConns = host, uint16(p), 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	conn, err := pool.Acquire(ctx) // connected outside the clock
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	start := time.Now()
	for i := range scans {
		if err := primary.WriteDirect(ctx, conn.Conn(), rows[i*perScan:(i+1)*perScan], primary.DefaultCopyThreshold); err != nil {
			b.Fatal(err)
		}
	}
	directBlocked := time.Since(start)
	directVisible := directBlocked // committed when the call returns

	// longhaul: the edge beside the checker, the link between edge and primary.
	lhURL := pgtest.URL(b)
	prim := startPrimary(b, lhURL, "127.0.0.1:0")
	shipLink := wan.New(b, prim.Addr())
	shipLink.SetRTT(rtt)
	s := startSystemTBWith(b, Config{Primary: shipLink.Addr()}, lhURL)
	ins := make([]*longhaulv1.Insight, n)
	for i, r := range rows {
		details, _ := structpb.NewStruct(map[string]any{"id": float64(i), "days_left": float64(i % 90), "note": string(r.Details[len(r.Details)-150 : len(r.Details)-3])})
		ins[i] = &longhaulv1.Insight{AccountId: r.AccountId, Asset: r.Asset, Kind: r.Kind, Subject: r.Subject, Severity: r.Severity,
			Details: details, ObservedAt: timestamppb.New(observed), ScanId: r.ScanId, Checker: r.Checker}
	}
	b.ResetTimer()
	start = time.Now()
	for i := range scans {
		scan := ins[i*perScan : (i+1)*perScan]
		if perScan <= 5000 {
			if _, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: scan}); err != nil {
				b.Fatal(err)
			}
			continue
		}
		stream, err := s.ingest.PushStream(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for j := 0; j < len(scan); j += 5000 {
			if err := stream.Send(&longhaulv1.PushRequest{Insights: scan[j:min(len(scan), j+5000)]}); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := stream.CloseAndRecv(); err != nil {
			b.Fatal(err)
		}
	}
	lhBlocked := time.Since(start)
	for {
		var c int
		if err := s.db.QueryRow(ctx, `SELECT count(*) FROM insights`).Scan(&c); err != nil {
			b.Fatal(err)
		}
		if c == n {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	lhVisible := time.Since(start)
	b.StopTimer()

	b.ReportMetric(directBlocked.Seconds(), "direct-blocked-s")
	b.ReportMetric(directVisible.Seconds(), "direct-visible-s")
	b.ReportMetric(lhBlocked.Seconds(), "longhaul-blocked-s")
	b.ReportMetric(lhVisible.Seconds(), "longhaul-visible-s")
	b.ReportMetric(directBlocked.Seconds()/lhBlocked.Seconds(), "blocked-ratio")
	fmt.Printf("\n%d scans of %d insights, %v RTT: checker blocked %.2fs direct vs %.2fs through an edge (%.1fx less); all visible after %.2fs direct vs %.2fs\n",
		scans, perScan, rtt, directBlocked.Seconds(), lhBlocked.Seconds(), directBlocked.Seconds()/lhBlocked.Seconds(), directVisible.Seconds(), lhVisible.Seconds())
}
