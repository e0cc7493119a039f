package faults

import (
	"testing"
	"time"

	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/wan"
	"github.com/longhaul/longhaul/primary"
)

// TestCopyCutMidStreamIsRetriedAndAppliedOnce: the primary reaches
// PostgreSQL through a toxiproxy link, and the link is cut while a COPY of
// a large batch (above the COPY threshold) is running, again and again:
// once by resetting every connection through it, once by closing each
// connection after 64 KiB more upstream (a COPY stream cut part way).
//
// Pass: each cut fails an apply (the primary counts it, does not
// acknowledge it); the shipper resumes within resumeBound; after each cut
// the tables are exactly the effect of the edge's records up to the ledger
// (nothing of the cut batch alone, nothing twice); the edge resends and the
// primary applies it, through COPY, once:
// at the end every acknowledged insight is in the primary exactly once per
// edge sequence.
func TestCopyCutMidStreamIsRetriedAndAppliedOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		cut, heal func(*wan.Link)
	}{
		{"reset", func(l *wan.Link) { l.ResetPeer() }, func(*wan.Link) {}},
		{"limit_data_upstream", func(l *wan.Link) { l.LimitDataUp(64 << 10) }, func(l *wan.Link) { l.LimitDataUp(0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cuts := pick(3, 10)
			d := newDB(t)
			url, link := d.throughLink()
			p := startPrimary(t, primary.Config{DatabaseURL: url, Applier: primary.ApplierConfig{CopyThreshold: 500}})
			e := startEdge(t, "copy-cut", p.svc.Addr(), func(c *edge.Config) {
				// Batches collect for a while: most go through COPY.
				c.Shipper.MaxBatchAge = 300 * time.Millisecond
			})
			w := d.watch()
			b := newBook()
			l := b.start(t, loadConfig{pushers: 1, perPush: 1000, keys: 20000, pace: 50 * time.Millisecond}, e)

			var (
				midCopy, records, rows, probes int
				resumes                        []time.Duration
			)
			for range cuts {
				if !w.await(inCopy, 30*time.Second) {
					t.Fatal("no COPY seen running within 30s")
				}
				failures := metric(t, p.reg, "longhaul_primary_apply_failures_total", nil)
				before := e.shipper.Stats()
				tc.cut(link)
				midCopy++
				waitFor(t, "the cut fails an apply", 30*time.Second, func() bool {
					return metric(t, p.reg, "longhaul_primary_apply_failures_total", nil) > failures
				})
				tc.heal(link)
				resumes = append(resumes, waitResumed(t, e, before.Connects, before.AppliedSeq))
				r := b.probe(t, d, false, e.id)
				records, rows, probes = records+r.records, rows+r.rows, probes+1
			}
			l.Stop()
			drain := waitDrained(t, drainBound, e)
			r := b.probe(t, d, true, e.id)
			records, rows, probes = records+r.records, rows+r.rows, probes+1
			copyRows := metric(t, p.reg, "longhaul_primary_rows_total", map[string]string{"path": "copy"})
			if copyRows == 0 {
				t.Error("no rows went through COPY")
			}
			t.Logf("faults: COPY cut (%s): %d cuts during a running COPY, %d applies failed, %d batches applied (%d rows through COPY), "+
				"%d insights acknowledged, %d probes checked %d records and %d rows, shipper resumed within %v at the longest, final drain %v",
				tc.name, midCopy, int(metric(t, p.reg, "longhaul_primary_apply_failures_total", nil)), r.batches, int(copyRows),
				b.acked.Load(), probes, records, rows, round(maxDur(resumes)), round(drain))
		})
	}
}
