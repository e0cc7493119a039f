package faults

import (
	"context"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/serve"
	"github.com/longhaul/longhaul/internal/wan"
	"github.com/longhaul/longhaul/primary"
	"github.com/longhaul/longhaul/wal"
)

// diskFull fails writes to Pebble's write-ahead files (*.log) with ENOSPC
// while it is on, as a full disk does. Only those: a flush or compaction
// that fails in Pebble's background ends the process (Pebble's Fatalf),
// which is not what this test is about.
type diskFull struct {
	on   atomic.Bool
	hits atomic.Int64
}

func (f *diskFull) String() string { return "diskFull" }

func (f *diskFull) MaybeError(op errorfs.Op) error {
	if !f.on.Load() || !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	switch op.Kind {
	case errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpFilePreallocate:
		f.hits.Add(1)
		return &os.PathError{Op: "write", Path: op.Path, Err: syscall.ENOSPC}
	}
	return nil
}

// partsEdge is an edge put together from its exported parts (wal.Open,
// edge.NewServer, edge.NewShipper) on a file system of the test's:
// edge.Config has no way to give edge.Start one.
type partsEdge struct {
	node   *edgeNode
	server *edge.Server
	grpc   *serve.GRPC
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startPartsEdge(t *testing.T, dir string, fs vfs.FS, primaryAddr string) *partsEdge {
	t.Helper()
	ctx := context.Background()
	log, err := wal.Open(ctx, dir, wal.Options{FS: fs, Logger: logger()})
	if err != nil {
		t.Fatal(err)
	}
	server, err := edge.NewServer(log, edge.Limits{}, logger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	shipper, err := edge.NewShipper(log, edge.ShipperConfig{EdgeID: "eu/disk", Region: "eu", Primary: primaryAddr, Logger: logger(),
		MaxBatchAge: 50 * time.Millisecond, BackoffMin: 20 * time.Millisecond, BackoffMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := serve.NewGRPC()
	longhaulv1.RegisterIngestServer(g.Server, server)
	g.Serve(ln, longhaulv1.Ingest_ServiceDesc.ServiceName)
	sctx, cancel := context.WithCancel(ctx)
	pe := &partsEdge{server: server, grpc: g, cancel: cancel, done: make(chan error, 1),
		node: &edgeNode{id: "eu/disk", wal: log, shipper: shipper, client: dialIngest(t, ln.Addr().String())}}
	go func() { pe.done <- shipper.Run(sctx) }()
	t.Cleanup(func() { pe.stop(t) })
	return pe
}

// stop stops the edge as edge.Service.Stop does: pushes, then shipping,
// then the WAL. Safe to call twice.
func (pe *partsEdge) stop(t *testing.T) {
	pe.once.Do(func() {
		pe.server.Close()
		if err := pe.grpc.Stop(context.Background(), 5*time.Second); err != nil {
			t.Error(err)
		}
		pe.cancel()
		if err := <-pe.done; err != nil {
			t.Errorf("shipper: %v", err)
		}
		if err := pe.node.wal.Close(); err != nil {
			t.Logf("closing the WAL after the disk filled: %v", err)
		}
	})
}

// TestDiskFullUnderTheWALRefusesPushesAndShipsWhatItAcknowledged: the disk
// under an edge's WAL fills (writes to Pebble's write-ahead files fail with
// ENOSPC) while a checker pushes, and frees again; the edge is restarted;
// several rounds. The edge is put together from its parts (see partsEdge):
// edge.Config cannot take a file system.
//
// Pass: once a push has been refused for the full disk (UNAVAILABLE), the
// edge acknowledges nothing more, also after the space returns: the WAL's
// failure is sticky and only a restart (reopening the WAL) recovers it;
// what it acknowledged before is shipped all the same; nothing of a
// refused push ever reaches the primary, not even after the restart; after
// each restart pushes are accepted again; at the end every acknowledged
// insight is in the primary exactly once per edge sequence.
func TestDiskFullUnderTheWALRefusesPushesAndShipsWhatItAcknowledged(t *testing.T) {
	t.Parallel()
	rounds := pick(2, 10)
	d := newDB(t)
	p := startPrimary(t, primary.Config{DatabaseURL: d.url})
	// A slow link, so that the WAL holds a backlog when the disk fills.
	link := wan.New(t, p.svc.Addr())
	link.SetRTT(200 * time.Millisecond)
	dir := t.TempDir()
	fault := &diskFull{}
	fs := errorfs.Wrap(vfs.Default, fault)
	b := newBook()
	var (
		records, rows, restarts, refusedFull, refusedAfter int
		backlog                                            uint64
		shipped                                            []time.Duration
	)
	cfg := loadConfig{pushers: 1, perPush: 50, keys: 2000, pace: 10 * time.Millisecond, expect: []codes.Code{codes.Unavailable}}
	for round := 0; ; round++ {
		pe := startPartsEdge(t, dir, fs, link.Addr())
		e := pe.node
		if round > 0 {
			restarts++
		}
		pushes := b.pushes.Load()
		l := b.start(t, cfg, e)
		waitFor(t, "pushes accepted", resumeBound, func() bool { return b.pushes.Load() >= pushes+5 })
		if round == rounds {
			l.Stop()
			waitDrained(t, drainBound, e)
			break
		}

		refused, n0 := b.refused.Load(), b.refusals()[codes.Unavailable]
		fault.on.Store(true)
		waitFor(t, "a push refused for the full disk", resumeBound, func() bool { return b.refused.Load() > refused })
		acked := b.pushes.Load()
		last := b.last(e.id)
		applied := uint64(d.scalar(`SELECT coalesce(max(applied_seq), 0) FROM edge_ledger WHERE edge_id = $1`, e.id))
		backlog += last - min(last, applied)
		if err := e.wal.Stats().Failed; err == nil || !strings.Contains(err.Error(), "no space left") {
			t.Errorf("WAL failure %v, want it to say ENOSPC", err)
		}
		// What was acknowledged before is shipped while the disk is full,
		// though the WAL can no longer truncate what the primary applied.
		shipped = append(shipped, waitFor(t, "acknowledged records shipped from the failed WAL", drainBound, func() bool {
			return e.shipper.Stats().AppliedSeq >= last
		}))
		time.Sleep(300 * time.Millisecond)
		n1 := b.refusals()[codes.Unavailable]
		fault.on.Store(false) // the space returns
		time.Sleep(300 * time.Millisecond)
		l.Stop()
		n2 := b.refusals()[codes.Unavailable]
		refusedFull, refusedAfter = refusedFull+n1-n0, refusedAfter+n2-n1
		if got := b.pushes.Load(); got != acked {
			t.Fatalf("%d pushes acknowledged after the edge refused one for a full disk", got-acked)
		}
		r := b.probe(t, d, true, e.id)
		records, rows = records+r.records, rows+r.rows
		pe.stop(t)
	}
	r := b.probe(t, d, true, "eu/disk")
	records, rows = records+r.records, rows+r.rows
	t.Logf("faults: disk full (ENOSPC under the WAL): %d rounds, %d injected write errors, %d pushes refused while full and %d after the space "+
		"returned (until the restart), %d restarts, %d insights acknowledged in %d pushes, %d records unshipped when the disk filled "+
		"and all shipped from the failed WAL within %v, checked %d records and %d rows",
		rounds, fault.hits.Load(), refusedFull, refusedAfter, restarts, b.acked.Load(), b.pushes.Load(), backlog, round(maxDur(shipped)), records, rows)
}

// TestWALQuotaRefusesWithoutLossAndRecoversAsTheShipperDrains: an edge with
// a small WAL quota ships over a slow link (300 ms round trip, one batch in
// flight) while checkers push faster than it can ship, for a while; then
// the link is fast again. Unlike edge's TestFullWALRefusesThenRecovers
// (the primary down, then back), the primary is up all along: the WAL is
// full only because shipping is slower than pushing, and frees as it drains.
//
// Pass: pushes beyond the quota are refused RESOURCE_EXHAUSTED with the
// reason WAL_FULL and a retry hint, and nothing of a refused push reaches
// the primary;
// the WAL never holds more than its quota; pushes are accepted again, with
// no restart, as the shipper drains; at the end every acknowledged insight
// is in the primary exactly once per edge sequence.
//
// And /readyz fails while pushes are refused (for the retry hint's time
// after each refusal), though a push is refused as soon as it would go
// beyond the quota, so the WAL's bytes stay short of it.
func TestWALQuotaRefusesWithoutLossAndRecoversAsTheShipperDrains(t *testing.T) {
	t.Parallel()
	const quota = 256 << 10
	full := pick(5*time.Second, 60*time.Second)
	d := newDB(t)
	p := startPrimary(t, primary.Config{DatabaseURL: d.url})
	link := wan.New(t, p.svc.Addr())
	e := startEdge(t, "quota", link.Addr(), func(c *edge.Config) {
		c.QuotaBytes = quota
		c.Shipper.MaxInFlight, c.Shipper.MaxBatchRecords = 1, 200
	})
	link.SetRTT(300 * time.Millisecond)

	var (
		mu          sync.Mutex
		fulls, hint int
		other       []error
		firstFull   time.Time
	)
	b := newBook()
	l := b.start(t, loadConfig{pushers: 3, perPush: 100, keys: 5000, pace: 5 * time.Millisecond, backoff: 50 * time.Millisecond,
		expect: []codes.Code{codes.ResourceExhausted},
		refused: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			st := status.Convert(err)
			reason, retry := "", time.Duration(0)
			for _, det := range st.Details() {
				switch det := det.(type) {
				case *errdetails.ErrorInfo:
					reason = det.Reason
				case *errdetails.RetryInfo:
					retry = det.RetryDelay.AsDuration()
				}
			}
			if reason != edge.ReasonWALFull {
				other = append(other, err)
				return
			}
			if fulls++; fulls == 1 {
				firstFull = time.Now()
			}
			if retry > 0 {
				hint++
			}
		}}, e)

	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	var peak uint64
	var notReady, samples int
	ackedAtFirstFull := int64(-1)
	for t0 := time.Now(); time.Since(t0) < full; time.Sleep(20 * time.Millisecond) {
		peak = max(peak, uint64(e.wal.Stats().Bytes))
		samples++
		mu.Lock()
		seenFull := fulls > 0
		mu.Unlock()
		if seenFull && ackedAtFirstFull < 0 {
			ackedAtFirstFull = b.pushes.Load()
		}
		resp, err := client.Get("http://" + e.svc.HTTPAddr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			notReady++
		}
	}
	l.Stop()
	acceptedAfter := b.pushes.Load() - ackedAtFirstFull
	link.SetRTT(0)
	drain := waitDrained(t, drainBound, e)
	r := b.probe(t, d, true, e.id)

	mu.Lock()
	defer mu.Unlock()
	for _, err := range other {
		t.Errorf("refused for another reason than WAL_FULL: %v", err)
	}
	if fulls == 0 {
		t.Fatal("no push was refused WAL_FULL: the test did not test what it says")
	}
	if hint != fulls {
		t.Errorf("%d of %d WAL_FULL refusals carried a retry hint", hint, fulls)
	}
	if ackedAtFirstFull < 0 || acceptedAfter <= 0 {
		t.Errorf("no push accepted after the first WAL_FULL (%v after it): the edge did not recover as the shipper drained", time.Since(firstFull))
	}
	if peak > quota {
		t.Errorf("the WAL held %d bytes, quota %d", peak, quota)
	}
	if notReady == 0 {
		t.Errorf("/readyz never failed in %d samples while %d pushes were refused WAL_FULL", samples, fulls)
	}
	t.Logf("faults: WAL quota (%d KiB, shipping at 300ms RTT for %v): %d pushes refused WAL_FULL (all with a retry hint), "+
		"%d pushes accepted after the first refusal without a restart, /readyz failing in %d of %d samples, peak %d bytes in the WAL; "+
		"%d insights acknowledged in %d pushes, drained in %v once the link was fast, checked %d records and %d rows",
		quota>>10, full, fulls, acceptedAfter, notReady, samples, peak, b.acked.Load(), b.pushes.Load(), round(drain), r.records, r.rows)
}
