package primary

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/coalesce"
)

// modelRow is what the reference model says a key's row must hold.
type modelRow struct {
	winner    *longhaulv1.BatchInsight
	firstSeen int64
}

// model computes the table from the set of observations alone: for each key
// the greatest observation under last-writer-wins, and the earliest time it
// was seen. It knows nothing of batches, edges or order.
func model(all []*longhaulv1.BatchInsight) map[string]modelRow {
	out := map[string]modelRow{}
	for _, in := range all {
		k := fmt.Sprintf("%s/%s/%s/%s", in.AccountId, in.Asset, in.Kind, in.Subject)
		m, ok := out[k]
		if !ok {
			out[k] = modelRow{winner: in, firstSeen: in.ObservedAtUnixMicros}
			continue
		}
		if coalesce.Compare(coalesce.NewObs(in), coalesce.NewObs(m.winner)) > 0 {
			m.winner = in
		}
		m.firstSeen = min(m.firstSeen, in.ObservedAtUnixMicros)
		out[k] = m
	}
	return out
}

func genInsight() *rapid.Generator[*longhaulv1.BatchInsight] {
	return rapid.Custom(func(t *rapid.T) *longhaulv1.BatchInsight {
		return &longhaulv1.BatchInsight{
			AccountId:            rapid.SampledFrom([]string{"acme", "globex"}).Draw(t, "account"),
			Asset:                "a.example",
			Kind:                 rapid.SampledFrom([]string{"tls.expiry", "http.hsts"}).Draw(t, "kind"),
			Subject:              rapid.SampledFrom([]string{"443", "8443", "/"}).Draw(t, "subject"),
			Severity:             longhaulv1.Severity(rapid.IntRange(3, 4).Draw(t, "severity")),
			Details:              fmt.Appendf(nil, `{"v": %d}`, rapid.IntRange(0, 3).Draw(t, "v")),
			ObservedAtUnixMicros: at(rapid.IntRange(0, 2).Draw(t, "sec")), // ties are common, down to the details
			ScanId:               rapid.SampledFrom([]string{"scan-1", "scan-2"}).Draw(t, "scan"),
			Checker:              rapid.SampledFrom([]string{"tls", "http"}).Draw(t, "checker"),
		}
	})
}

// TestApplyMatchesModel: whatever the batching, the order, the number of
// replays and the edges the observations go through (applied one after the
// other or at once), the table is the reference model's.
func TestApplyMatchesModel(t *testing.T) {
	t.Parallel()
	pool := setup(t, ApplierConfig{}).pool
	ctx := context.Background()
	rapid.Check(t, func(rt *rapid.T) {
		if _, err := pool.Exec(ctx, `TRUNCATE insights, edge_ledger, scans, dead_letters`); err != nil {
			rt.Fatal(err)
		}
		a, err := NewApplier(pool, ApplierConfig{CopyThreshold: rapid.SampledFrom([]int{1, 3, 1 << 30}).Draw(rt, "threshold")})
		if err != nil {
			rt.Fatal(err)
		}
		all := rapid.SliceOfN(genInsight(), 1, 60).Draw(rt, "insights")
		edges := rapid.IntRange(1, 3).Draw(rt, "edges")

		// Deal the observations to edges, then cut each edge's log into
		// batches; some batches are sent again later (a lost ack).
		logs := make([][]*longhaulv1.BatchInsight, edges)
		for i, in := range all {
			e := rapid.IntRange(0, edges-1).Draw(rt, fmt.Sprintf("edge%d", i))
			logs[e] = append(logs[e], in)
		}
		plans := make([][]*longhaulv1.Batch, edges)
		for e, log := range logs {
			var sent []*longhaulv1.Batch
			for seq := 0; seq < len(log); {
				n := rapid.IntRange(1, len(log)-seq).Draw(rt, "batch")
				b := &longhaulv1.Batch{EdgeId: fmt.Sprintf("edge-%d", e), FirstSeq: uint64(seq + 1), LastSeq: uint64(seq + n),
					Insights: append([]*longhaulv1.BatchInsight(nil), log[seq:seq+n]...)}
				plans[e] = append(plans[e], b)
				sent = append(sent, b)
				if rapid.IntRange(0, 3).Draw(rt, "replay") == 0 {
					old := sent[rapid.IntRange(0, len(sent)-1).Draw(rt, "which")]
					plans[e] = append(plans[e], cloneBatch(old))
				}
				seq += n
			}
		}

		applyPlan := func(plan []*longhaulv1.Batch) error {
			for _, b := range plan {
				res, err := a.Apply(ctx, cloneBatch(b))
				if err != nil {
					return err
				}
				if res.Status == longhaulv1.Ack_OUT_OF_SEQUENCE {
					return fmt.Errorf("batch %d..%d out of sequence", b.FirstSeq, b.LastSeq)
				}
			}
			return nil
		}
		if rapid.Bool().Draw(rt, "concurrent") {
			// Each edge's batches through Apply, or on a shipping stream
			// of its own to a server writing up to parallel of them at once.
			apply := applyPlan
			if parallel := rapid.IntRange(0, 3).Draw(rt, "stream parallel"); parallel > 0 {
				addr := serveShipper(rt, a, ServerConfig{Parallel: parallel})
				apply = func(plan []*longhaulv1.Batch) error { return shipPlan(ctx, addr, plan) }
			}
			var wg sync.WaitGroup
			errs := make([]error, edges)
			for e := range plans {
				wg.Go(func() { errs[e] = apply(plans[e]) })
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					rt.Fatal(err)
				}
			}
		} else {
			// One edge after the other, in a drawn order.
			for _, e := range rapid.Permutation(rangeN(edges)).Draw(rt, "order") {
				if err := applyPlan(plans[e]); err != nil {
					rt.Fatal(err)
				}
			}
		}

		got := tableOf(rt, pool)
		want := model(all)
		if len(got) != len(want) {
			rt.Fatalf("table has %d rows, model %d", len(got), len(want))
		}
		for k, m := range want {
			g, ok := got[k]
			if !ok {
				rt.Fatalf("row %s missing", k)
			}
			w := stored{Severity: coalesce.SeverityText(m.winner.Severity), ScanID: m.winner.ScanId, Checker: m.winner.Checker,
				Details: map[string]any{"v": float64(m.winner.Details[6] - '0')}, FirstSeen: time.UnixMicro(m.firstSeen).UTC(),
				LastSeen: time.UnixMicro(m.winner.ObservedAtUnixMicros).UTC()}
			if !reflect.DeepEqual(g, w) {
				rt.Fatalf("row %s = %+v, model says %+v", k, g, w)
			}
		}
	})
}

// serveShipper serves a Server of a on loopback until t ends and returns
// its address.
func serveShipper(t interface {
	Fatal(...any)
	Cleanup(func())
}, a *Applier, cfg ServerConfig) string {
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := NewServer(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	longhaulv1.RegisterShipperServer(g, srv)
	go g.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// shipPlan sends an edge's batches on one stream, as fast as the stream
// takes them, and checks that each is acknowledged in order, none out of
// sequence.
func shipPlan(ctx context.Context, addr string, plan []*longhaulv1.Batch) error {
	if len(plan) == 0 {
		return nil
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := longhaulv1.NewShipperClient(cc).Ship(ctx)
	if err != nil {
		return err
	}
	hello := &longhaulv1.ShipRequest{Kind: &longhaulv1.ShipRequest_Hello{Hello: &longhaulv1.Hello{EdgeId: plan[0].EdgeId}}}
	if err := stream.Send(hello); err != nil {
		return err
	}
	if _, err := stream.Recv(); err != nil {
		return err
	}
	sent := make(chan error, 1)
	go func() {
		for _, b := range plan {
			if err := stream.Send(&longhaulv1.ShipRequest{Kind: &longhaulv1.ShipRequest_Batch{Batch: cloneBatch(b)}}); err != nil {
				sent <- err
				return
			}
		}
		sent <- stream.CloseSend()
	}()
	for _, b := range plan {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		ack := m.GetAck()
		if ack.GetFirstSeq() != b.FirstSeq || ack.GetLastSeq() != b.LastSeq {
			return fmt.Errorf("ack %d..%d, want %d..%d (in order)", ack.GetFirstSeq(), ack.GetLastSeq(), b.FirstSeq, b.LastSeq)
		}
		if ack.GetStatus() == longhaulv1.Ack_OUT_OF_SEQUENCE {
			return fmt.Errorf("batch %d..%d out of sequence", b.FirstSeq, b.LastSeq)
		}
	}
	return <-sent
}

func rangeN(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func cloneBatch(b *longhaulv1.Batch) *longhaulv1.Batch {
	return proto.Clone(b).(*longhaulv1.Batch)
}
