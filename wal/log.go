package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

var (
	// ErrFull is returned by Append when the group would take the live
	// records beyond Options.QuotaBytes. Nothing of the group was written;
	// Truncate frees quota.
	ErrFull = errors.New("wal: quota full")
	// ErrClosed is returned by calls on a closed Log, and by Appends that
	// were still waiting when Close was called (those wrote nothing).
	ErrClosed = errors.New("wal: closed")
	// ErrFailed is wrapped, together with the cause, by every write after a
	// write or fsync failed: the log is then read-only until reopened, since
	// what reached the disk is no longer known.
	ErrFailed = errors.New("wal: failed")
)

// Log is a durable, ordered log of records. See the package documentation
// for its guarantees and concurrency contract.
type Log struct {
	db     *pebble.DB
	opts   Options
	logger *slog.Logger

	// commitMu serializes commits (group commits and truncations), so that
	// no commit starts after one failed, and the live accounting does not
	// move under a group commit's quota check.
	commitMu sync.Mutex

	mu struct {
		sync.Mutex
		pending []*request
		// busy is set while a committer (an Append leading a round, or the
		// committer goroutine) owns the queue. When it is clear, pending
		// is empty.
		busy    bool
		closing bool
		// failErr is the sticky failure, wrapping ErrFailed.
		failErr error
		// wedged is set when Pebble panicked inside a commit: its commit
		// pipeline may hold its locks, so Close must not call DB.Close.
		wedged bool
		// changed is closed and replaced whenever last grows, the log
		// fails, or it closes.
		changed chan struct{}

		last         uint64 // newest durable sequence (0: none yet)
		lastEnd      uint64 // cumulative accounted bytes through last
		truncated    uint64 // every sequence <= truncated is gone
		truncatedEnd uint64 // cumulative accounted bytes through truncated
		oldestAt     time.Time
		// truncatedSinceCompact counts bytes truncated since the last
		// background compaction was requested.
		truncatedSinceCompact int64

		appends, appendedRecords, syncs, fullRejections uint64
		// lastFull is when an Append was last refused with ErrFull.
		lastFull time.Time
	}

	// truncMu makes a truncation atomic for readers: Truncate holds it while
	// it deletes records and moves the truncation point, Read while it takes
	// the state and opens its iterator, so any hole a reader meets is
	// corruption.
	truncMu sync.RWMutex

	// dbMu guards the db's lifetime: readers hold it shared; Close takes it
	// exclusively to close the db.
	dbMu     sync.RWMutex
	dbClosed bool

	kick      chan struct{}  // hands the queue to the committer goroutine
	leaders   sync.WaitGroup // Appends leading a round
	compactCh chan struct{}  // wakes the compactor
	stop      chan struct{}  // closed by Close
	stopCtx   context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// request is one Append waiting for the committer.
type request struct {
	payloads [][]byte
	at       time.Time
	size     int64
	// state moves from statePending to stateClaimed (by the committer) or
	// stateCanceled (by Append, when its ctx ends first).
	state atomic.Int32
	done  chan struct{}

	first, last uint64
	err         error
}

const (
	statePending int32 = iota
	stateClaimed
	stateCanceled
)

// Open opens the log in dir, creating it if needed, and recovers its state:
// every record acknowledged before a crash is there, and the next sequence is
// above every sequence ever handed out.
func Open(ctx context.Context, dir string, opts Options) (*Log, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("wal: open %s: %w", dir, err)
	}
	popts := &pebble.Options{
		FS:                 opts.FS,
		Logger:             pebbleLogger{opts.Logger},
		FormatMajorVersion: pebble.FormatNewest,
		MemTableSize:       opts.MemTableSize,
		// A memtable holding a truncation flushes within this delay, so
		// the range deletion can drop the sstables it covers.
		FlushDelayDeleteRange: 10 * time.Second,
	}
	db, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, fmt.Errorf("wal: open %s: %w", dir, err)
	}
	l := &Log{
		db:        db,
		opts:      opts,
		logger:    opts.Logger,
		kick:      make(chan struct{}, 1),
		compactCh: make(chan struct{}, 1),
		stop:      make(chan struct{}),
	}
	l.mu.changed = make(chan struct{})
	if err := l.recover(); err != nil {
		return nil, errors.Join(fmt.Errorf("wal: open %s: %w", dir, err), db.Close())
	}
	l.stopCtx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(2)
	go l.committer()
	go l.compactor()
	l.logger.Debug("wal: opened", "dir", dir, "truncated", l.mu.truncated, "last", l.mu.last,
		"live_bytes", int64(l.mu.lastEnd-l.mu.truncatedEnd))
	return l, nil
}

// recover loads the truncation point and the newest record, and checks that
// they agree with the oldest live record.
func (l *Log) recover() error {
	var m meta
	v, closer, err := l.db.Get(metaKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read meta: %w", err)
	default:
		m, err = decodeMeta(v)
		_ = closer.Close()
		if err != nil {
			return err
		}
	}
	l.mu.truncated, l.mu.truncatedEnd = m.truncatedSeq, m.truncatedEnd
	l.mu.last, l.mu.lastEnd = m.truncatedSeq, m.truncatedEnd

	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: recordKey(0), UpperBound: recordKeyEnd})
	if err != nil {
		return err
	}
	defer func() { _ = it.Close() }()
	if !it.Last() {
		return it.Error()
	}
	lastRec, lastEnd, err := decodeIter(it)
	if err != nil {
		return err
	}
	it.First()
	first, firstEnd, err := decodeIter(it)
	if err != nil {
		return err
	}
	if first.Seq != m.truncatedSeq+1 || firstEnd-uint64(recordSize(len(first.Payload))) != m.truncatedEnd {
		return fmt.Errorf("%w: oldest record %d (end %d) does not follow the truncation point %d (end %d)",
			ErrCorrupt, first.Seq, firstEnd, m.truncatedSeq, m.truncatedEnd)
	}
	if lastEnd < firstEnd || lastRec.Seq < first.Seq {
		return fmt.Errorf("%w: newest record %d (end %d) is before oldest %d (end %d)",
			ErrCorrupt, lastRec.Seq, lastEnd, first.Seq, firstEnd)
	}
	l.mu.last, l.mu.lastEnd = lastRec.Seq, lastEnd
	l.mu.oldestAt = first.AppendedAt
	return nil
}

func decodeIter(it *pebble.Iterator) (Record, uint64, error) {
	v, err := it.ValueAndErr()
	if err != nil {
		return Record{}, 0, err
	}
	return decodeRecordEnd(it.Key(), v)
}

// Append writes payloads as one group of consecutive records and returns
// their sequence numbers once they are fsynced. The group is all or nothing:
// on error none of it was acknowledged (after a crash in the middle of an
// Append that then failed, the whole group may or may not be there, never
// part of it). Append does not keep payloads after it returns.
//
// If ctx ends before the group is taken into a commit, Append returns
// ctx.Err() and writes nothing; once taken, it waits for the fsync (one
// group commit at most).
func (l *Log) Append(ctx context.Context, payloads [][]byte) (first, last uint64, err error) {
	if len(payloads) == 0 {
		return 0, 0, errors.New("wal: append: no records")
	}
	var size int64
	for i, p := range payloads {
		if uint64(len(p)) > maxPayloadLen {
			return 0, 0, fmt.Errorf("wal: append: record %d: payload of %d bytes exceeds %d", i, len(p), maxPayloadLen)
		}
		size += recordSize(len(p))
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	req := &request{payloads: payloads, size: size, done: make(chan struct{})}

	l.mu.Lock()
	switch {
	case l.mu.closing:
		l.mu.Unlock()
		return 0, 0, ErrClosed
	case l.mu.failErr != nil:
		err := l.mu.failErr
		l.mu.Unlock()
		return 0, 0, err
	case int64(l.mu.lastEnd-l.mu.truncatedEnd)+size > l.opts.QuotaBytes:
		// Already over without counting the groups ahead of it; the
		// committer makes the exact check.
		l.refusedLocked(1)
		l.mu.Unlock()
		return 0, 0, ErrFull
	}
	// Stamped in queue order, so AppendedAt does not decrease along the
	// sequence (unless the wall clock steps back).
	req.at = l.opts.now()
	l.mu.pending = append(l.mu.pending, req)
	lead := !l.mu.busy
	if lead {
		l.mu.busy = true
		l.leaders.Add(1)
	}
	l.mu.Unlock()
	if lead {
		l.leadRound()
	}

	select {
	case <-req.done:
	case <-ctx.Done():
		if req.state.CompareAndSwap(statePending, stateCanceled) {
			return 0, 0, ctx.Err()
		}
		<-req.done
	}
	return req.first, req.last, req.err
}

// leadRound commits one group, led by the Append that found no committer
// busy: with no contention, an Append commits on its own goroutine, without
// waking another. Whatever queued meanwhile goes to the committer goroutine.
func (l *Log) leadRound() {
	defer l.leaders.Done()
	if group := l.takeGroup(); len(group) > 0 {
		l.commitGroup(group)
	}
	l.mu.Lock()
	switch {
	case len(l.mu.pending) == 0:
		l.mu.busy = false
		l.mu.Unlock()
	case l.mu.closing:
		// The committer goroutine may be gone.
		l.mu.Unlock()
		l.failPending()
	default:
		l.mu.Unlock()
		l.kick <- struct{}{}
	}
}

// committer commits groups, one at a time, from when a leading Append hands
// it the queue until the queue is empty.
func (l *Log) committer() {
	defer l.wg.Done()
	for {
		select {
		case <-l.kick:
		case <-l.stop:
			l.failPending()
			return
		}
		for {
			select {
			case <-l.stop:
				l.failPending()
				return
			default:
			}
			if group := l.takeGroup(); len(group) > 0 {
				l.commitGroup(group)
			}
			l.mu.Lock()
			empty := len(l.mu.pending) == 0
			if empty {
				l.mu.busy = false
			}
			l.mu.Unlock()
			if empty {
				break
			}
		}
	}
}

// failPending answers the Appends still waiting at Close with ErrClosed.
// Append adds no more once closing is set.
func (l *Log) failPending() {
	l.mu.Lock()
	pending := l.mu.pending
	l.mu.pending = nil
	l.mu.Unlock()
	for _, r := range pending {
		if r.state.CompareAndSwap(statePending, stateClaimed) {
			r.err = ErrClosed
			close(r.done)
		}
	}
}

// refusedLocked counts n Appends refused with ErrFull, and when. l.mu is
// held.
func (l *Log) refusedLocked(n uint64) {
	if n > 0 {
		l.mu.fullRejections += n
		l.mu.lastFull = time.Now()
	}
}

// takeGroup takes waiting requests, oldest first, up to MaxGroupBytes of
// payload (at least one), and claims those not canceled.
func (l *Log) takeGroup() []*request {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, bytes := 0, int64(0)
	for n < len(l.mu.pending) {
		r := l.mu.pending[n]
		if n > 0 && bytes+r.size > int64(l.opts.MaxGroupBytes) {
			break
		}
		bytes += r.size
		n++
	}
	taken := l.mu.pending[:n]
	l.mu.pending = append([]*request(nil), l.mu.pending[n:]...)
	group := make([]*request, 0, n)
	for _, r := range taken {
		if r.state.CompareAndSwap(statePending, stateClaimed) {
			group = append(group, r)
		}
	}
	return group
}

// commitGroup assigns sequence numbers to the group's requests that fit in
// the quota, writes them in one Pebble batch, waits for its fsync, and only
// then publishes them to readers and answers the requests.
func (l *Log) commitGroup(group []*request) {
	l.commitMu.Lock()
	defer l.commitMu.Unlock()
	defer func() {
		for _, r := range group {
			close(r.done)
		}
	}()

	l.mu.Lock()
	failErr := l.mu.failErr
	next, end := l.mu.last+1, l.mu.lastEnd
	live := int64(l.mu.lastEnd - l.mu.truncatedEnd)
	l.mu.Unlock()
	if failErr != nil {
		for _, r := range group {
			r.err = failErr
		}
		return
	}

	var batchLen int
	accepted := group[:0:0]
	var full uint64
	for _, r := range group {
		if live+r.size > l.opts.QuotaBytes {
			r.err = ErrFull
			full++
			continue
		}
		live += r.size
		// Plus Pebble's per-entry kind and two length varints.
		batchLen += int(r.size) + 11*len(r.payloads)
		accepted = append(accepted, r)
	}
	if len(accepted) == 0 {
		l.mu.Lock()
		l.refusedLocked(full)
		l.mu.Unlock()
		return
	}

	b := l.db.NewBatchWithSize(batchLen)
	records := uint64(0)
	for _, r := range accepted {
		r.first = next
		at := r.at.UnixNano()
		for _, p := range r.payloads {
			op := b.SetDeferred(recordKeyLen, recordHeaderLen+len(p))
			putRecordKey(op.Key, next)
			end += uint64(recordSize(len(p)))
			encodeRecordValue(op.Value, op.Key, at, end, p)
			// Finish only fails on indexed batches; this one is not.
			_ = op.Finish()
			next++
		}
		r.last = next - 1
		records += uint64(len(r.payloads))
	}

	err := l.write(b)
	if err == nil {
		err = l.syncWait(b)
	}
	if err != nil {
		for _, r := range group {
			r.first, r.last, r.err = 0, 0, err
		}
		return
	}

	l.mu.Lock()
	if l.mu.last == l.mu.truncated {
		l.mu.oldestAt = accepted[0].at
	}
	l.mu.last, l.mu.lastEnd = next-1, end
	l.mu.appends += uint64(len(accepted))
	l.mu.appendedRecords += records
	l.refusedLocked(full)
	if !l.opts.noSync {
		l.mu.syncs++
	}
	l.notifyLocked()
	l.mu.Unlock()
}

// write hands b to Pebble's WAL and memtable (with a Sync request unless
// noSync); once it returns, b is visible to Pebble iterators. syncWait must
// follow. On failure the log fails and the sticky error is returned.
func (l *Log) write(b *pebble.Batch) (err error) {
	defer func() {
		if p := recover(); p != nil {
			// Pebble panics (or calls Fatalf, which panics here) when it
			// cannot write its WAL; its commit pipeline may be left locked.
			l.fail(fmt.Errorf("pebble commit: %v", p), true)
			err = l.failure()
		}
	}()
	if l.opts.noSync {
		err = l.db.Apply(b, pebble.NoSync)
	} else {
		// ApplyNoSyncWait + SyncWait, unlike Apply, returns an fsync error
		// instead of handing it to Logger.Fatalf.
		err = l.db.ApplyNoSyncWait(b, pebble.Sync)
	}
	if err != nil {
		_ = b.Close()
		l.fail(fmt.Errorf("write: %w", err), false)
		return l.failure()
	}
	return nil
}

// syncWait waits for the fsync of a batch that write accepted, and closes
// it. On failure the log fails and the sticky error is returned.
func (l *Log) syncWait(b *pebble.Batch) error {
	var err error
	if !l.opts.noSync {
		err = b.SyncWait()
	}
	_ = b.Close()
	if err != nil {
		l.fail(fmt.Errorf("sync: %w", err), false)
		return l.failure()
	}
	return nil
}

// fail makes the log read-only with a sticky error wrapping cause.
func (l *Log) fail(cause error, wedged bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if wedged {
		l.mu.wedged = true
	}
	if l.mu.failErr != nil {
		return
	}
	l.mu.failErr = fmt.Errorf("%w: %w", ErrFailed, cause)
	l.logger.Error("wal: write failed; refusing writes until reopened", "err", cause)
	l.notifyLocked()
}

func (l *Log) failure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.failErr
}

func (l *Log) notifyLocked() {
	close(l.mu.changed)
	l.mu.changed = make(chan struct{})
}

// Read returns up to maxRecords durable records in sequence order, starting
// at from (or at the oldest live record when from is below it: what lies
// below was truncated, that is acknowledged by the primary). Their payloads
// total at most maxBytes (maxBytes <= 0: no byte limit), except that a
// single record larger than maxBytes is returned alone. It returns no records,
// without waiting, when nothing at or after from is durable yet; see Wait.
//
// Records are returned only once fsynced, so a reader never sees a record
// that a crash could take back, and never a hole.
func (l *Log) Read(ctx context.Context, from uint64, maxRecords int, maxBytes int) ([]Record, error) {
	if maxRecords <= 0 {
		return nil, fmt.Errorf("wal: read: maxRecords %d must be positive", maxRecords)
	}
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbClosed {
		return nil, ErrClosed
	}
	l.truncMu.RLock()
	l.mu.Lock()
	truncated, last := l.mu.truncated, l.mu.last
	l.mu.Unlock()
	start := max(from, truncated+1)
	if start > last {
		l.truncMu.RUnlock()
		return nil, nil
	}
	it, err := l.db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: recordKey(start),
		UpperBound: recordKey(last + 1),
	})
	l.truncMu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("wal: read from %d: %w", start, err)
	}
	defer func() { _ = it.Close() }()

	n := min(maxRecords, int(min(last-start+1, 1024)))
	out := make([]Record, 0, n)
	bytes := 0
	want := start
	for ok := it.First(); ok; ok = it.Next() {
		if len(out)%256 == 255 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		r, _, err := decodeIter(it)
		if err != nil {
			return nil, fmt.Errorf("wal: read from %d: %w", start, err)
		}
		if r.Seq != want {
			return nil, fmt.Errorf("wal: read from %d: %w: record %d is missing (found %d)", start, ErrCorrupt, want, r.Seq)
		}
		if maxBytes > 0 && len(out) > 0 && bytes+len(r.Payload) > maxBytes {
			break
		}
		r.Payload = append([]byte(nil), r.Payload...)
		out = append(out, r)
		bytes += len(r.Payload)
		want = r.Seq + 1
		if len(out) >= maxRecords {
			break
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("wal: read from %d: %w", start, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("wal: read from %d: %w: records up to %d are missing", start, ErrCorrupt, last)
	}
	return out, nil
}

// Wait blocks until a record after sequence after is durable (and so
// readable), ctx ends, or the log closes or fails with nothing more to read.
func (l *Log) Wait(ctx context.Context, after uint64) error {
	for {
		l.mu.Lock()
		last, changed, closing, failErr := l.mu.last, l.mu.changed, l.mu.closing, l.mu.failErr
		l.mu.Unlock()
		switch {
		case last > after:
			return nil
		case closing:
			return ErrClosed
		case failErr != nil:
			return failErr
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Truncate removes every record up to and including upTo, durably, and frees
// their quota. upTo must not be beyond the newest durable record; truncating
// below the current truncation point does nothing.
func (l *Log) Truncate(ctx context.Context, upTo uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.commitMu.Lock()
	defer l.commitMu.Unlock()
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()

	l.mu.Lock()
	closing, failErr := l.mu.closing, l.mu.failErr
	truncated, truncatedEnd, last, lastEnd := l.mu.truncated, l.mu.truncatedEnd, l.mu.last, l.mu.lastEnd
	l.mu.Unlock()
	switch {
	case closing || l.dbClosed:
		return ErrClosed
	case failErr != nil:
		return failErr
	case upTo <= truncated:
		return nil
	case upTo > last:
		return fmt.Errorf("wal: truncate to %d: beyond the newest record %d", upTo, last)
	}

	end := lastEnd
	if upTo < last {
		v, closer, err := l.db.Get(recordKey(upTo))
		if err != nil {
			return fmt.Errorf("wal: truncate to %d: %w", upTo, err)
		}
		_, end, err = decodeRecordEnd(recordKey(upTo), v)
		_ = closer.Close()
		if err != nil {
			return fmt.Errorf("wal: truncate to %d: %w", upTo, err)
		}
	}

	b := l.db.NewBatch()
	if err := b.DeleteRange(recordKey(truncated+1), recordKey(upTo+1), nil); err != nil {
		_ = b.Close()
		return fmt.Errorf("wal: truncate to %d: %w", upTo, err)
	}
	if err := b.Set(metaKey, encodeMeta(meta{truncatedSeq: upTo, truncatedEnd: end}), nil); err != nil {
		_ = b.Close()
		return fmt.Errorf("wal: truncate to %d: %w", upTo, err)
	}
	// The deletion becomes visible to iterators when write returns, before
	// its fsync: move the truncation point with it, atomically for readers,
	// and wait for the fsync without holding them up. Until the fsync, no
	// Append can use the freed quota (commitMu), and Truncate has not
	// returned.
	l.truncMu.Lock()
	if err := l.write(b); err != nil {
		l.truncMu.Unlock()
		return fmt.Errorf("wal: truncate to %d: %w", upTo, err)
	}
	l.mu.Lock()
	l.mu.truncated, l.mu.truncatedEnd = upTo, end
	l.mu.Unlock()
	l.truncMu.Unlock()
	if err := l.syncWait(b); err != nil {
		return fmt.Errorf("wal: truncate to %d: %w", upTo, err)
	}

	var oldestAt time.Time
	if upTo < last {
		v, closer, err := l.db.Get(recordKey(upTo + 1))
		if err == nil {
			var r Record
			r, err = decodeRecord(recordKey(upTo+1), v)
			_ = closer.Close()
			oldestAt = r.AppendedAt
		}
		if err != nil {
			// The truncation is durable; only the age metric is off.
			l.logger.Error("wal: read oldest record after truncation", "seq", upTo+1, "err", err)
		}
	}

	freed := int64(end - truncatedEnd)
	l.mu.Lock()
	l.mu.oldestAt = oldestAt
	if !l.opts.noSync {
		l.mu.syncs++
	}
	l.mu.truncatedSinceCompact += freed
	compact := l.opts.CompactAfterBytes > 0 && l.mu.truncatedSinceCompact >= l.opts.CompactAfterBytes
	if compact {
		l.mu.truncatedSinceCompact = 0
	}
	l.mu.Unlock()
	if compact {
		select {
		case l.compactCh <- struct{}{}:
		default:
		}
	}
	return nil
}

// compactor compacts the truncated key range when Truncate asks it to, so
// that the disk space of truncated records returns promptly.
func (l *Log) compactor() {
	defer l.wg.Done()
	for {
		select {
		case <-l.compactCh:
		case <-l.stop:
			return
		}
		l.mu.Lock()
		upTo := l.mu.truncated
		l.mu.Unlock()
		start := time.Now()
		err := l.db.Compact(l.stopCtx, recordKey(0), recordKey(upTo+1), false)
		switch {
		case err == nil:
			l.logger.Debug("wal: compacted truncated records", "up_to", upTo, "took", time.Since(start))
		case l.stopCtx.Err() == nil:
			l.logger.Warn("wal: compacting truncated records", "up_to", upTo, "err", err)
		}
	}
}

// Stats is a snapshot of the log for metrics.
type Stats struct {
	// TruncatedSeq is the truncation point: every record up to it is gone.
	TruncatedSeq uint64
	// LastSeq is the newest durable record's sequence (TruncatedSeq when
	// no record is live).
	LastSeq uint64
	// Records and Bytes are the live (unshipped) records and what they
	// count against QuotaBytes.
	Records    uint64
	Bytes      int64
	QuotaBytes int64
	// OldestAppendedAt is the oldest live record's append time; zero when
	// no record is live.
	OldestAppendedAt time.Time

	// Counters since Open.
	Appends         uint64 // acknowledged Append calls
	AppendedRecords uint64 // records in them
	Syncs           uint64 // fsynced commits: group commits and truncations
	FullRejections  uint64 // Append calls refused with ErrFull
	// LastFullRejection is when an Append was last refused with ErrFull
	// (the local clock); zero if none was.
	LastFullRejection time.Time
	// Failed is the sticky failure, nil while the log accepts writes.
	Failed error
}

// Stats returns a snapshot of the log's state and counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{
		TruncatedSeq:      l.mu.truncated,
		LastSeq:           l.mu.last,
		Records:           l.mu.last - l.mu.truncated,
		Bytes:             int64(l.mu.lastEnd - l.mu.truncatedEnd),
		QuotaBytes:        l.opts.QuotaBytes,
		OldestAppendedAt:  l.mu.oldestAt,
		Appends:           l.mu.appends,
		AppendedRecords:   l.mu.appendedRecords,
		Syncs:             l.mu.syncs,
		FullRejections:    l.mu.fullRejections,
		LastFullRejection: l.mu.lastFull,
		Failed:            l.mu.failErr,
	}
}

// Close stops the log: Appends still waiting fail with ErrClosed, the group
// being committed completes, then Pebble closes. Calling Close again returns
// the first call's result.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.mu.closing = true
		l.notifyLocked()
		l.mu.Unlock()
		close(l.stop)
		l.cancel()
		l.wg.Wait()
		l.leaders.Wait()
		l.failPending()

		l.dbMu.Lock()
		defer l.dbMu.Unlock()
		l.dbClosed = true
		l.mu.Lock()
		wedged := l.mu.wedged
		l.mu.Unlock()
		if wedged {
			// DB.Close would block on the commit pipeline Pebble left
			// locked; the process should restart to recover.
			l.closeErr = fmt.Errorf("wal: close: %w: pebble left its commit pipeline locked; not closing it", ErrFailed)
			return
		}
		if err := l.db.Close(); err != nil {
			l.closeErr = fmt.Errorf("wal: close: %w", err)
		}
	})
	return l.closeErr
}

var _ io.Closer = (*Log)(nil)
