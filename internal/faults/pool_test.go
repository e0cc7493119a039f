package faults

import (
	"fmt"
	"testing"
	"time"

	"github.com/longhaul/longhaul/primary"
)

// TestPoolExhaustedBehindSlowDatabaseStallsNoShipper: the primary reaches
// PostgreSQL through a link with 200 ms of round trip and may hold 2
// connections, while 4 edges ship a steady stream: every apply holds a
// connection for several round trips, so the streams queue for the pool.
// Then the latency goes.
//
// Pass: the pool never holds more than 2 connections, and it was seen
// full with all 4 streams open (the fault happened); every edge's ledger
// moves during the slow phase (no shipper stuck behind the others, none
// cut off: the streams wait, they do not fail); once the latency is
// removed every edge's backlog is shipped within drainBound; every
// acknowledged insight is in the primary exactly once per edge sequence.
func TestPoolExhaustedBehindSlowDatabaseStallsNoShipper(t *testing.T) {
	t.Parallel()
	const edges, maxConns = 4, 2
	slow := pick(8*time.Second, 90*time.Second)
	d := newDB(t)
	url, link := d.throughLink()
	p := startPrimary(t, primary.Config{DatabaseURL: url, MaxConns: maxConns})
	var es []*edgeNode
	for i := range edges {
		es = append(es, startEdge(t, fmt.Sprint("pool-", i), p.svc.Addr(), nil))
	}
	w := d.watch()
	b := newBook()
	l := b.start(t, loadConfig{pushers: 1, perPush: 50, keys: 2000, pace: 100 * time.Millisecond}, es...)
	waitFor(t, "all edges connected", resumeBound, func() bool {
		return metric(t, p.reg, "longhaul_primary_streams", nil) == edges
	})

	link.SetRTT(200 * time.Millisecond)
	start := map[string]uint64{}
	reconnects := map[string]uint64{}
	for _, e := range es {
		st := e.shipper.Stats()
		start[e.id], reconnects[e.id] = st.AppliedSeq, st.Reconnects
	}
	var peak, samples, full int
	for t0 := time.Now(); time.Since(t0) < slow; time.Sleep(100 * time.Millisecond) {
		n := w.backends()
		peak = max(peak, n)
		samples++
		if n == maxConns && metric(t, p.reg, "longhaul_primary_streams", nil) == edges {
			full++
		}
	}
	var backlog int64
	for _, e := range es {
		st := e.shipper.Stats()
		if st.AppliedSeq <= start[e.id] {
			t.Errorf("%s: ledger did not move in %v behind the slow database (stats %+v)", e.id, slow, st)
		}
		if st.Reconnects != reconnects[e.id] {
			t.Errorf("%s: %d streams failed while waiting for the pool (last error %q); want them to wait", e.id,
				st.Reconnects-reconnects[e.id], st.LastError)
		}
		backlog += int64(e.wal.Stats().Records)
	}
	if peak > maxConns {
		t.Errorf("the primary held %d connections, MaxConns is %d", peak, maxConns)
	}
	if full == 0 {
		t.Errorf("the pool was never seen full with %d streams open: the test did not test what it says", edges)
	}

	link.SetRTT(0)
	l.Stop()
	drain := waitDrained(t, drainBound, es...)
	r := b.probe(t, d, true, ids(es...)...)
	t.Logf("faults: pool exhausted: %d edges, MaxConns %d, %v at 200ms RTT to PostgreSQL, pool seen full in %d of %d samples "+
		"(peak %d connections), %d records backlog when the latency went, drained in %v; %d insights acknowledged in %d pushes, "+
		"%d batches applied, checked %d records and %d rows",
		edges, maxConns, slow, full, samples, peak, backlog, round(drain), b.acked.Load(), b.pushes.Load(),
		r.batches, r.records, r.rows)
}
