package faults

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestPrimarySIGKILLMidApplyLosesNothingAndAppliesOnce: the primary runs as
// a child process and is SIGKILLed again and again while an edge ships a
// steady stream of pushes, each kill aimed at a moment when one of its apply
// transactions is open in PostgreSQL; it is restarted on the same address.
//
// Pass: after every kill the tables are exactly the effect of the edge's
// records up to the ledger (no partial batch, none applied twice); after
// every restart the shipper is welcomed on a new stream and its ledger moves
// on within resumeBound (it never gets stuck); at the end every
// acknowledged insight is in the primary exactly once per edge sequence,
// and the insights table is the last-writer-wins of all of them.
func TestPrimarySIGKILLMidApplyLosesNothingAndAppliesOnce(t *testing.T) {
	t.Parallel()
	kills := pick(6, 40)
	d := newDB(t)
	child := &primaryProcess{t: t, cfg: childConfig{DatabaseURL: d.url, Listen: freeAddr(t), HTTPListen: freeAddr(t), CopyThreshold: 500}}
	child.start()
	t.Cleanup(child.kill)
	e := startEdge(t, "kill-primary", child.cfg.Listen, nil)
	w := d.watch()

	b := newBook()
	l := b.start(t, loadConfig{pushers: 2, perPush: 200, keys: 3000, pace: 30 * time.Millisecond}, e)
	rng := rand.New(rand.NewPCG(1, 2))
	var (
		midApply, records, rows int
		probes                  int
		resumes, starts         []time.Duration
	)
	for range kills {
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		if w.await(inApply, 5*time.Second) {
			midApply++
		}
		child.kill()
		before := e.shipper.Stats()
		// The primary is dead: nothing moves in the tables now.
		r := b.probe(t, d, false, e.id)
		records, rows, probes = records+r.records, rows+r.rows, probes+1
		starts = append(starts, child.start())
		resumes = append(resumes, waitResumed(t, e, before.Connects, before.AppliedSeq))
	}
	l.Stop()
	drain := waitDrained(t, drainBound, e)
	r := b.probe(t, d, true, e.id)
	records, rows, probes = records+r.records, rows+r.rows, probes+1
	st := e.shipper.Stats()
	t.Logf("faults: primary SIGKILL: %d kills (%d with an apply transaction open), %d restarts (longest start %v), "+
		"%d insights acknowledged in %d pushes, %d batches applied, %d resent batches acknowledged DUPLICATE, %d reconnects, "+
		"%d probes checked %d records and %d rows, shipper resumed within %v at the longest, final drain %v",
		kills, midApply, kills, round(maxDur(starts)), b.acked.Load(), b.pushes.Load(), r.batches, st.Duplicates, st.Reconnects,
		probes, records, rows, round(maxDur(resumes)), round(drain))
	if midApply == 0 {
		t.Error("no kill caught an apply transaction open: the test did not test what it says")
	}
}
