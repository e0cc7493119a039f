package faults

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/primary"
)

// goroutineSlack is how many goroutines more than before a fault the
// process may keep once everything has recovered and gone idle: connection
// pools and gRPC keep a few per connection, and reconnecting may leave one
// more or less of them, but a leak grows with every fault.
const goroutineSlack = 10

// TestPostgresImmediateStopLosesNoBatchAndRecoversWithoutRestarts:
// PostgreSQL is stopped the way a crash stops it (pg_ctl stop -m immediate:
// no checkpoint, recovery at the next start) while an edge ships a steady
// stream and the primary has an apply transaction open, kept down a while,
// and started again; several times. Neither the primary nor the edge is
// restarted. Not parallel: the cluster is the whole test binary's.
//
// Pass: after each restart the tables are exactly the effect of the edge's
// records up to the ledger (the open transaction was rolled back whole, no
// committed batch was lost); the shipper resumes within resumeBound; at the
// end every acknowledged insight is in the primary exactly once per edge
// sequence; and once idle again the process runs no more than
// goroutineSlack goroutines more than before the first stop.
func TestPostgresImmediateStopLosesNoBatchAndRecoversWithoutRestarts(t *testing.T) {
	cluster := pgtest.Cluster(t)
	stops := pick(2, 10)
	down := pick(1500*time.Millisecond, 5*time.Second)
	d := newDB(t)
	p := startPrimary(t, primary.Config{DatabaseURL: d.url, Applier: primary.ApplierConfig{CopyThreshold: 500}})
	e := startEdge(t, "pg-stop", p.svc.Addr(), nil)
	cfg := loadConfig{pushers: 2, perPush: 200, keys: 3000, pace: 30 * time.Millisecond}

	// A first round, to have every pool and stream open, then the
	// baseline, idle.
	b := newBook()
	l := b.start(t, cfg, e)
	time.Sleep(time.Second)
	l.Stop()
	waitDrained(t, drainBound, e)
	baseline := settledGoroutines(0, 2*time.Second)

	l = b.start(t, cfg, e)
	var (
		midApply, records, rows, probes int
		resumes                         []time.Duration
	)
	for range stops {
		time.Sleep(300 * time.Millisecond)
		w := d.watch()
		if w.await(inApply, 5*time.Second) {
			midApply++
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := cluster.StopImmediate(ctx); err != nil {
			cancel()
			t.Fatal(err)
		}
		before := e.shipper.Stats()
		time.Sleep(down) // the edge goes on acknowledging pushes meanwhile
		err := cluster.Restart(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		resumes = append(resumes, waitResumed(t, e, before.Connects, before.AppliedSeq))
		r := b.probe(t, d, false, e.id)
		records, rows, probes = records+r.records, rows+r.rows, probes+1
	}
	l.Stop()
	drain := waitDrained(t, drainBound, e)
	r := b.probe(t, d, true, e.id)
	records, rows, probes = records+r.records, rows+r.rows, probes+1

	after := settledGoroutines(baseline+goroutineSlack, 30*time.Second)
	if after > baseline+goroutineSlack {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines once idle after the restarts, %d before the first stop (slack %d):\n%s",
			after, baseline, goroutineSlack, buf[:runtime.Stack(buf, true)])
	}
	st := e.shipper.Stats()
	t.Logf("faults: PostgreSQL immediate stop: %d stops (%d with an apply transaction open), each down %v, "+
		"%d insights acknowledged in %d pushes, %d batches applied, %d reconnects, %d apply failures, "+
		"%d probes checked %d records and %d rows, shipper resumed within %v at the longest, final drain %v, "+
		"goroutines %d before and %d after",
		stops, midApply, down, b.acked.Load(), b.pushes.Load(), r.batches, st.Reconnects,
		int(metric(t, p.reg, "longhaul_primary_apply_failures_total", nil)),
		probes, records, rows, round(maxDur(resumes)), round(drain), baseline, after)
	if midApply == 0 {
		t.Error("no stop caught an apply transaction open: the test did not test what it says")
	}
}

// settledGoroutines polls runtime.NumGoroutine for up to wait and returns
// the first count at or below target, or the lowest seen. With target 0 it
// returns the lowest count seen over the whole wait.
func settledGoroutines(target int, wait time.Duration) int {
	lowest := runtime.NumGoroutine()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		n := runtime.NumGoroutine()
		lowest = min(lowest, n)
		if target > 0 && n <= target {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
	return lowest
}
