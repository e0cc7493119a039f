package edge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/wan"
	"github.com/longhaul/longhaul/primary"
	"github.com/longhaul/longhaul/pushclient"
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
//
// A third case is the big scan as checkers run it: its insights are found
// evenly over a scan time (LONGHAUL_BENCH_SCAN_TIME, default 30s), in 100
// steps. The direct checker gathers them and writes them in one call at
// the end of the scan (holding a pooled connection across the link for
// the whole scan would starve the other checkers); the edge's checker
// writes each step's insights as it finds them through a
// pushclient.Writer and closes it at the end. Blocked is the time in
// write calls (the Writer's Write and Close), visible is from the scan's
// start.
func BenchmarkSeedSituation(b *testing.B) {
	n := 500000
	if s, err := strconv.Atoi(os.Getenv("LONGHAUL_BENCH_INSIGHTS")); err == nil && s > 0 {
		n = s
	}
	scanTime := 30 * time.Second
	if v := os.Getenv("LONGHAUL_BENCH_SCAN_TIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("LONGHAUL_BENCH_SCAN_TIME=%q: want a positive duration", v)
		}
		scanTime = d
	}
	b.Run(fmt.Sprintf("scans=1x%d", n), func(b *testing.B) { benchSeed(b, 1, n) })
	b.Run("scans=200x50", func(b *testing.B) { benchSeed(b, 200, 50) })
	b.Run(fmt.Sprintf("scans=1x%d,found-over=%s", n, scanTime), func(b *testing.B) { benchSeedScanning(b, n, scanTime) })
}

// seedRTT is the round trip between the checker's region and PostgreSQL's.
const seedRTT = 80 * time.Millisecond

func benchSeed(b *testing.B, scans, perScan int) {
	n := scans * perScan
	ctx := context.Background()
	observed := time.Now().Add(-time.Minute)
	rows := primary.Synthetic(n, 0, 200, observed, "scan-seed")

	// direct: the applier in the checker's region, PostgreSQL across the link.
	conn := seedDirectConn(b)
	start := time.Now()
	for i := range scans {
		if err := primary.WriteDirect(ctx, conn, rows[i*perScan:(i+1)*perScan], primary.DefaultCopyThreshold); err != nil {
			b.Fatal(err)
		}
	}
	directBlocked := time.Since(start)
	directVisible := directBlocked // committed when the call returns

	// longhaul: the edge beside the checker, the link between edge and primary.
	s := seedEdge(b)
	ins := seedInsights(rows, observed)
	// The checker's copies are not the edge's to carry: the edge and the
	// primary in this process need not mark them at every GC.
	rows = nil
	runtime.GC()
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
			clear(scan[j:min(len(scan), j+5000)]) // sent: Send encoded them
		}
		if _, err := stream.CloseAndRecv(); err != nil {
			b.Fatal(err)
		}
	}
	lhBlocked := time.Since(start)
	lhVisible := seedVisible(b, s, n).Sub(start)
	b.StopTimer()

	b.ReportMetric(directBlocked.Seconds(), "direct-blocked-s")
	b.ReportMetric(directVisible.Seconds(), "direct-visible-s")
	b.ReportMetric(lhBlocked.Seconds(), "longhaul-blocked-s")
	b.ReportMetric(lhVisible.Seconds(), "longhaul-visible-s")
	b.ReportMetric(directBlocked.Seconds()/lhBlocked.Seconds(), "blocked-ratio")
	fmt.Printf("\n%d scans of %d insights, %v RTT: checker blocked %.2fs direct vs %.2fs through an edge (%.1fx less); all visible after %.2fs direct vs %.2fs\n",
		scans, perScan, seedRTT, directBlocked.Seconds(), lhBlocked.Seconds(), directBlocked.Seconds()/lhBlocked.Seconds(), directVisible.Seconds(), lhVisible.Seconds())
}

// benchSeedScanning is the seed's big scan found over scanTime: direct
// writes it in one call at the end, the edge's checker streams it through
// a pushclient.Writer as it is found.
func benchSeedScanning(b *testing.B, n int, scanTime time.Duration) {
	const steps = 100
	ctx := context.Background()
	observed := time.Now().Add(-time.Minute)
	rows := primary.Synthetic(n, 0, 200, observed, "scan-seed")
	// scan sleeps through the scan's steps, calling found with each step's
	// insights [lo, hi) once found; the time found takes delays the rest of
	// the scan (a checker's loop) and is returned as blocked.
	scan := func(found func(lo, hi int) error) (blocked time.Duration) {
		start := time.Now()
		for k := range steps {
			time.Sleep(time.Until(start.Add(blocked + scanTime*time.Duration(k+1)/steps)))
			t := time.Now()
			if err := found(k*n/steps, (k+1)*n/steps); err != nil {
				b.Fatal(err)
			}
			blocked += time.Since(t)
		}
		return blocked
	}

	// direct: gathers the rows as the scan finds them, one call at the end.
	conn := seedDirectConn(b)
	start := time.Now()
	scan(func(int, int) error { return nil })
	t := time.Now()
	if err := primary.WriteDirect(ctx, conn, rows, primary.DefaultCopyThreshold); err != nil {
		b.Fatal(err)
	}
	directBlocked := time.Since(t)
	directVisible := time.Since(start) // committed when the call returns

	// longhaul: each step's insights written as found, to the edge beside
	// the checker.
	s := seedEdge(b)
	ins := seedInsights(rows, observed)
	client, err := pushclient.New(pushclient.Config{Edges: []string{s.edge.Addr()}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	b.ResetTimer()
	start = time.Now()
	w := client.NewWriter(pushclient.WriterConfig{SegmentInsights: max(1, n/steps)})
	lhBlocked := scan(func(lo, hi int) error { return w.Write(ctx, ins[lo:hi]...) })
	t = time.Now()
	if _, err := w.Close(ctx); err != nil {
		b.Fatal(err)
	}
	lhClose := time.Since(t)
	lhBlocked += lhClose
	lhVisible := seedVisible(b, s, n).Sub(start)
	b.StopTimer()

	b.ReportMetric(directBlocked.Seconds(), "direct-blocked-s")
	b.ReportMetric(directVisible.Seconds(), "direct-visible-s")
	b.ReportMetric(lhBlocked.Seconds(), "longhaul-blocked-s")
	b.ReportMetric(lhClose.Seconds(), "longhaul-close-s")
	b.ReportMetric(lhVisible.Seconds(), "longhaul-visible-s")
	b.ReportMetric(directBlocked.Seconds()/lhBlocked.Seconds(), "blocked-ratio")
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	fmt.Printf("\n1 scan of %d insights found over %v, %v RTT: checker blocked %v direct (one call at the end) vs %v streaming to an edge "+
		"(%.1fx less; %v of it in Close); all visible %v after the scan's start direct vs %v\n",
		n, scanTime, seedRTT, ms(directBlocked), ms(lhBlocked), directBlocked.Seconds()/lhBlocked.Seconds(), ms(lhClose),
		ms(directVisible), ms(lhVisible))
}

// seedDirectConn is a connection to a database of its own across a link
// of seedRTT, made outside the clock, closed when b ends.
func seedDirectConn(b *testing.B) *pgx.Conn {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.URL(b))
	if err != nil {
		b.Fatal(err)
	}
	pgLink := wan.New(b, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	pgLink.SetRTT(seedRTT)
	host, port, _ := net.SplitHostPort(pgLink.Addr())
	p, _ := strconv.Atoi(port)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.MaxConns = host, uint16(p), 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(conn.Release)
	return conn.Conn()
}

// seedEdge is an edge beside the checker shipping to a primary, on a
// database of its own, across a link of seedRTT.
func seedEdge(b *testing.B) *system {
	url := pgtest.URL(b)
	prim := startPrimary(b, url, "127.0.0.1:0")
	shipLink := wan.New(b, prim.Addr())
	shipLink.SetRTT(seedRTT)
	return startSystemTBWith(b, Config{Primary: shipLink.Addr()}, url)
}

// seedInsights are rows as a checker pushes them to an edge: the same
// details, as JSON text (details_json), as direct writes.
func seedInsights(rows []*longhaulv1.BatchInsight, observed time.Time) []*longhaulv1.Insight {
	ins := make([]*longhaulv1.Insight, len(rows))
	for i, r := range rows {
		ins[i] = &longhaulv1.Insight{AccountId: r.AccountId, Asset: r.Asset, Kind: r.Kind, Subject: r.Subject, Severity: r.Severity,
			DetailsJson: string(r.Details), ObservedAt: timestamppb.New(observed), ScanId: r.ScanId, Checker: r.Checker}
	}
	return ins
}

// seedVisible waits until s's primary has applied everything s's edge
// holds, returns the time it saw that, and checks that the database holds
// n insights. It polls the edge's ledger row, which advances in the
// transaction that commits the rows: a count(*) over half a million rows
// every 20 ms would take a core from the PostgreSQL it measures.
func seedVisible(b *testing.B, s *system, n int) time.Time {
	ctx := context.Background()
	last := s.edge.WAL().Stats().LastSeq
	for {
		asked := time.Now()
		var applied uint64
		if err := s.db.QueryRow(ctx, `SELECT coalesce(max(applied_seq), 0) FROM edge_ledger`).Scan(&applied); err != nil {
			b.Fatal(err)
		}
		if applied >= last {
			var c int
			if err := s.db.QueryRow(ctx, `SELECT count(*) FROM insights`).Scan(&c); err != nil {
				b.Fatal(err)
			}
			if c != n {
				b.Fatalf("the edge's %d records are applied but the database holds %d insights, want %d", last, c, n)
			}
			return asked
		}
		time.Sleep(20 * time.Millisecond)
	}
}
