package primary

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// inFlight stands for a batch before being applied: a transaction of the
// test's holding that batch's advisory lock, as the batch's own would.
func inFlight(t *testing.T, b *bundle) (*turn, pgx.Tx) {
	t.Helper()
	prev := newTurn(nil)
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	if _, err := tx.Exec(b.ctx, `SELECT pg_advisory_xact_lock($1)`, prev.key); err != nil {
		t.Fatal(err)
	}
	prev.hold()
	return prev, tx
}

// applyInTurn applies the batch first..last of edge e1 after prev, in the
// background until the test ends.
func applyInTurn(tb *testing.T, b *bundle, prev *turn, first, last uint64, insights ...*longhaulv1.BatchInsight) (*turn, <-chan struct{}) {
	t := newTurn(prev)
	batch := &longhaulv1.Batch{EdgeId: "e1", FirstSeq: first, LastSeq: last, Insights: insights}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	tb.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		t.finish(b.applier.apply(ctx, batch, nil, t))
	}()
	return t, done
}

// waitFor polls cond until it holds, failing the test after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after 30s", what)
		}
	}
}

// locksOn counts the advisory locks on key, granted or waited for (other
// tests' locks are in pg_locks too).
func locksOn(t *testing.T, b *bundle, key int64, granted bool) int {
	return b.count(t, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
		AND ((classid::bigint << 32) | objid::bigint) = $1 AND granted = $2`, key, granted)
}

// waitingForTurn tells whether a transaction waits for prev's lock.
func waitingForTurn(t *testing.T, b *bundle, prev *turn) bool {
	return locksOn(t, b, prev.key, false) > 0
}

func TestTurnCommitsAfterTheBatchBefore(t *testing.T) {
	t.Parallel()
	b := setup(t, ApplierConfig{})
	prev, tx := inFlight(t, b)
	next, done := applyInTurn(t, b, prev, 2, 2, ins("k", "b", 2, "scan-1"))
	// The batch writes its rows, then waits for the one before to end.
	waitFor(t, "the batch to wait for its turn", func() bool { return waitingForTurn(t, b, prev) })

	// The batch before commits: the ledger at 1.
	if _, err := tx.Exec(b.ctx, `INSERT INTO edge_ledger (edge_id, applied_seq) VALUES ('e1', 1)`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
	prev.finish(Result{Status: longhaulv1.Ack_APPLIED, AppliedSeq: 1}, nil)
	<-done
	if next.err != nil || next.res.Status != longhaulv1.Ack_APPLIED || next.res.AppliedSeq != 2 {
		t.Fatalf("batch after: %+v, %v; want applied up to 2", next.res, next.err)
	}
	if n := testutil.ToFloat64(b.applier.metrics.turnWaits); n != 0 {
		t.Errorf("%v turn waits, want none", n)
	}
	if _, ok := b.table(t)["acme/a.example/k/b"]; !ok {
		t.Error("the batch's row is missing")
	}
}

// afterARollback: batch 2 of edge e1 waits for its turn behind batch 1,
// which rolls back without being done; batch 2 then finds the ledger short
// and waits for batch 1 in Go.
func afterARollback(t *testing.T) (b *bundle, prev, next *turn, done <-chan struct{}) {
	t.Helper()
	b = setup(t, ApplierConfig{})
	prev, tx := inFlight(t, b)
	next, done = applyInTurn(t, b, prev, 2, 2, ins("k", "b", 2, "scan-1"))
	waitFor(t, "the batch to wait for its turn", func() bool { return waitingForTurn(t, b, prev) })
	if err := tx.Rollback(b.ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the batch to wait for the one before", func() bool { return testutil.ToFloat64(b.applier.metrics.turnWaits) == 1 })
	return b, prev, next, done
}

// TestTurnAfterARollback: the batch before rolls back (it lost a deadlock,
// say) and is applied again later; the batch after finds the ledger short,
// rolls back too, waits, and is applied after it, once.
func TestTurnAfterARollback(t *testing.T) {
	t.Parallel()
	b, prev, next, done := afterARollback(t)
	if n := b.count(t, `SELECT count(*) FROM insights`); n != 0 {
		t.Fatalf("%d rows written before the batch before was applied", n)
	}

	// The batch before, applied again, alone.
	b.apply(t, "e1", 1, 1, []*longhaulv1.BatchInsight{ins("k", "a", 1, "scan-1")})
	prev.finish(Result{Status: longhaulv1.Ack_APPLIED, AppliedSeq: 1}, nil)
	<-done
	if next.err != nil || next.res.Status != longhaulv1.Ack_APPLIED || next.res.AppliedSeq != 2 {
		t.Fatalf("batch after: %+v, %v; want applied up to 2", next.res, next.err)
	}
	if n := b.count(t, `SELECT count(*) FROM insights`); n != 2 {
		t.Errorf("%d rows, want 2", n)
	}
	if n := b.count(t, `SELECT applied_count FROM scans WHERE scan_id = 'scan-1'`); n != 2 {
		t.Errorf("scan-1 counted %d insights, want 2 (each batch once)", n)
	}
}

// TestTurnAfterAFailure: the batch before fails for good; the batch after
// is not written (it would leave a gap) and fails with it.
func TestTurnAfterAFailure(t *testing.T) {
	t.Parallel()
	b, prev, next, done := afterARollback(t)
	boom := errors.New("boom")
	prev.finish(Result{}, boom)
	<-done
	if !errors.Is(next.err, boom) {
		t.Fatalf("batch after: %+v, %v; want it to fail with the batch before", next.res, next.err)
	}
	if n := b.count(t, `SELECT count(*) FROM insights`) + b.count(t, `SELECT count(*) FROM edge_ledger`); n != 0 {
		t.Errorf("%d rows written after a failed batch", n)
	}
}

// TestTurnReplayIsNotWritten: a batch sent again while the batch before is
// in flight is a DUPLICATE without writing or waiting for its turn, and is
// done only once the batch before is.
func TestTurnReplayIsNotWritten(t *testing.T) {
	t.Parallel()
	b := setup(t, ApplierConfig{})
	b.apply(t, "e1", 1, 3, []*longhaulv1.BatchInsight{ins("k", "a", 1, "scan-1")})
	prev, tx := inFlight(t, b)
	next, done := applyInTurn(t, b, prev, 2, 3, ins("k", "a", 5, "scan-2"))
	waitFor(t, "the replay to take its own advisory lock", func() bool {
		select {
		case <-next.held:
			return true
		default:
			return false
		}
	})
	waitFor(t, "the replay's transaction to end", func() bool { return locksOn(t, b, next.key, true) == 0 })
	if waitingForTurn(t, b, prev) {
		t.Fatal("the replay waits for its turn")
	}
	if next.finished() {
		t.Fatal("the replay is done before the batch before it")
	}
	if err := tx.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
	prev.finish(Result{Status: longhaulv1.Ack_APPLIED, AppliedSeq: 3}, nil)
	<-done
	if next.err != nil || next.res.Status != longhaulv1.Ack_DUPLICATE {
		t.Fatalf("replay: %+v, %v; want DUPLICATE", next.res, next.err)
	}
	if r := b.table(t)["acme/a.example/k/a"]; r.ScanID != "scan-1" {
		t.Errorf("the replay was written: %+v", r)
	}
}

// TestShipParallelResolvesWhileTheNextBatchWrites: a batch whose scan
// becomes ready resolves an insight, and right behind it on the stream a
// batch observes that insight again. Written at once, the second would
// hold the row the first's resolution updates while it waits for the first
// to commit.
//
//   - When the first batch carries the completion, the server sees it
//     coming: the second waits for the first, and nothing deadlocks.
//   - When the completion came earlier and the first batch's insights make
//     the scan ready, the server cannot tell: it is a deadlock PostgreSQL
//     sees (the wait for the turn is a lock) and breaks, one of them applied
//     again.
//
// Either way the stream goes on, and the outcome is the one in order:
// resolved by the completion, then reopened.
func TestShipParallelResolvesWhileTheNextBatchWrites(t *testing.T) {
	t.Parallel()
	for _, early := range []bool{false, true} {
		t.Run(fmt.Sprintf("completion-early=%v", early), func(t *testing.T) {
			t.Parallel()
			b := setup(t, ApplierConfig{})
			addr := serveShipper(t, b.applier, ServerConfig{Parallel: 2})
			const rounds = 3
			var plan []*longhaulv1.Batch
			for r := range rounds {
				asset := fmt.Sprintf("host-%d.example", r)
				scan := func(name string) string { return fmt.Sprintf("%s-%d", name, r) }
				on := func(kind, subject string, sec int, name string) *longhaulv1.BatchInsight {
					in := ins(kind, subject, sec, scan(name))
					in.Asset = asset
					return in
				}
				done := func(name string, count int64, start int) *longhaulv1.ScanCompletion {
					c := completion(scan(name), count, start)
					c.Asset = asset
					return c
				}
				scan1 := &longhaulv1.Batch{Insights: []*longhaulv1.BatchInsight{on("k", "a", 1, "scan-1"), on("k", "b", 1, "scan-1"), on("k", "c", 1, "scan-1")},
					Completions: []*longhaulv1.ScanCompletion{done("scan-1", 3, 0)}}
				// scan-2 does not see k/c: once ready, it resolves it.
				// Many more rows, so that the batch behind is at k/c first.
				scan2 := &longhaulv1.Batch{Insights: []*longhaulv1.BatchInsight{on("k", "a", 11, "scan-2"), on("k", "b", 11, "scan-2")}}
				for i := range 2000 {
					scan2.Insights = append(scan2.Insights, on("x", strconv.Itoa(i), 11, "scan-2"))
				}
				completion2 := done("scan-2", int64(len(scan2.Insights)), 10)
				if early {
					scan1.Completions = append(scan1.Completions, completion2)
				} else {
					scan2.Completions = append(scan2.Completions, completion2)
				}
				// scan-3 sees k/c again.
				scan3 := &longhaulv1.Batch{Insights: []*longhaulv1.BatchInsight{on("k", "c", 21, "scan-3")}}
				plan = append(plan, scan1, scan2, scan3)
			}
			for i, batch := range plan {
				batch.EdgeId, batch.FirstSeq, batch.LastSeq = "e1", uint64(i+1), uint64(i+1)
			}
			if err := shipPlan(b.ctx, addr, plan); err != nil {
				t.Fatal(err)
			}
			retries, waits := testutil.ToFloat64(b.applier.metrics.retries), testutil.ToFloat64(b.applier.metrics.turnWaits)
			t.Logf("%v transactions retried after a deadlock, %v batches applied again after the one before", retries, waits)
			if !early && retries+waits > 0 {
				t.Errorf("with the completion in the batch, %v retries and %v turn waits; want the batch behind to wait for it", retries, waits)
			}
			for r := range rounds {
				var resolvedCount int
				var open bool
				var scanID string
				err := b.pool.QueryRow(b.ctx, `SELECT s.resolved_count, i.resolved_at IS NULL, i.scan_id FROM scans s, insights i
					WHERE s.scan_id = $1 AND i.asset = $2 AND i.kind = 'k' AND i.subject = 'c'`,
					fmt.Sprintf("scan-2-%d", r), fmt.Sprintf("host-%d.example", r)).Scan(&resolvedCount, &open, &scanID)
				if err != nil {
					t.Fatal(err)
				}
				if resolvedCount != 1 || !open || scanID != fmt.Sprintf("scan-3-%d", r) {
					t.Errorf("round %d: scan-2 resolved %d, k/c open %v by %s; want 1 resolved, then reopened by scan-3", r, resolvedCount, open, scanID)
				}
			}
		})
	}
}
