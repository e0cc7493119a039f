package primary

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
)

// A turn is one batch's place among the batches of a stream that are being
// applied at once (ServerConfig.Parallel). The batches write their rows in
// parallel, each in its own transaction, but commit in the order they were
// sent: the ledger says each must start right after the one before.
//
// Each batch's transaction holds an advisory lock of its own (key) from its
// first statement on. The next batch writes its rows, then takes that lock
// shared before it locks the ledger, so it waits for the batch before it to
// commit or roll back. The wait is a lock PostgreSQL sees, not one in Go: a
// cycle through it (the earlier batch's scan resolution waiting for a row
// the later one wrote, or another edge's transaction between them) is a
// deadlock PostgreSQL detects and breaks, not a hang.
//
// No batch waits in Go while it holds rows: a batch waits for the one
// before to hold its lock before it takes any, and a batch that finds the
// pool without a connection to spare waits for the one before to be done
// before it takes one (writing ahead would hold it idle, and a pool the
// streams queue for is already the limit).
//
// The ledger check under the ledger's row lock still decides alone whether
// a batch is written, so exactly once does not rest on the advisory locks:
// a batch that finds the ledger short of its start while the batch before
// it is still being applied (it failed, or lost a deadlock and is trying
// again) rolls back, waits for it in Go holding nothing, and is applied
// again after it, alone.
type turn struct {
	key  int64 // the advisory lock the batch's transaction holds
	prev *turn // the batch before, nil for the first of a chain

	heldOnce sync.Once
	held     chan struct{} // closed once the transaction holds key, or gave up
	done     chan struct{} // closed once res and err are final
	res      Result
	err      error
}

func newTurn(prev *turn) *turn {
	return &turn{key: rand.Int64(), prev: prev, held: make(chan struct{}), done: make(chan struct{})}
}

// hold marks the advisory lock held (or never to be), so the next batch
// may start.
func (t *turn) hold() { t.heldOnce.Do(func() { close(t.held) }) }

// finish records the batch's outcome. It is called by the goroutine that
// applied the batch, the only one that reads prev: the chain of a
// long-lived stream is let go as it is done.
func (t *turn) finish(res Result, err error) {
	t.res, t.err = res, err
	t.prev = nil
	t.hold()
	close(t.done)
}

// finished tells whether the batch's outcome is final.
func (t *turn) finished() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// inFlight is the batch before t while it is still being applied, nil once
// it is done (its commit, if any, is then visible to t's ledger check).
func (t *turn) inFlight() *turn {
	if t == nil || t.prev == nil || t.prev.finished() {
		return nil
	}
	return t.prev
}

// errTurn is returned by applyOnce when the batch found the ledger short
// of its start while the batch before it was still being applied: it is to
// be applied again once that one is done.
var errTurn = errors.New("primary: the batch before is still being applied")

// awaitPrev waits for the batch before t; t then goes alone, and its ledger
// check gives its verdict. It fails when that batch failed: the stream ends
// with that batch's error.
func (t *turn) awaitPrev(ctx context.Context) error {
	if err := wait(ctx, t.prev.done); err != nil {
		return err
	}
	if err := t.prev.err; err != nil {
		return fmt.Errorf("primary: the batch before failed: %w", err)
	}
	t.prev = nil
	return nil
}

// wait waits for ch to close, or ctx to end.
func wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
