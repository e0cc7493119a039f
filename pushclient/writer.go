package pushclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// Defaults of WriterConfig.
const (
	DefaultSegmentInsights = 5000
	DefaultWindow          = 3
)

// errWriterClosed is what a Writer's calls return after Close, when Close
// returned nil.
var errWriterClosed = errors.New("pushclient: Writer closed")

// WriterConfig configures a Writer. The zero value of each field means its
// default.
type WriterConfig struct {
	// SegmentInsights is how many insights the Writer gathers before it
	// pushes them in the background, as one Push: what is acknowledged at
	// once, and sent again whole after a failure. A segment larger than
	// Config.StreamInsights goes as several streams, one after the other.
	// Default 5000, or Config.StreamInsights when that is smaller.
	SegmentInsights int
	// Window is how many segments may be under way (pushed, not yet
	// acknowledged) at once. Default 3.
	Window int
}

// Writer pushes one scan's insights while the scan goes on, as a Kafka
// producer sends: Write gathers insights and hands each full segment of
// SegmentInsights to a Push of its own in the background (failover,
// retries, retry hints and errors as Push), with at most Window segments
// under way; Flush pushes what is gathered and waits until every segment
// is acknowledged; Close flushes and ends the Writer. A checker that
// writes what it finds as it finds it waits, at the end of its scan, only
// for the last segments. What the Writer holds is bounded by the window:
// the Window segments under way and the one being gathered (and what a
// Write returning a context error left). It holds the insights, not
// copies: they must not change until Flush or Close returned.
//
// Nothing is durable until acknowledged. Write returning nil means the
// insights are taken, not that they are on an edge. Flush or Close
// returning nil means that every insight written before is durable on an
// edge (fsynced in its WAL, bound for the primary), as Push returning nil
// does. Send the scan's completion (Complete) only after Close returned
// nil.
//
// Segments are pushed at the same time and may be acknowledged in any
// order, each by whichever edge took it, so an insight may reach
// PostgreSQL before one written earlier. That is safe: the primary keeps,
// for each key, the insight of the latest observed_at (ties broken by a
// deterministic rule), whatever order it applies them in, so the table
// ends the same as if they had come in order.
//
// The first error that sending again would not cure ends the Writer and
// sticks: an *InputError (whose Index counts among all the insights given
// to Write, the first being 0), or another refusal Push returns at once;
// and ErrClosed when the Client is closed. Every later Write, Flush and
// Close returns it. The segments already under way go on until
// acknowledged (or until Close's context ends); what was gathered but not
// yet pushed is dropped. Close's Result then says which insights are known
// durable: Accepted, a prefix in the order written (resending from there
// is harmless even when some later segments did get through).
//
// A Writer is one scan's, written from one goroutine: its methods must not
// be called concurrently (several Writers may share a Client). Always
// Close it (defer it): no goroutine of the Writer outlives Close, also
// when Close's context ends first; until Close, segments under way keep
// retrying until acknowledged or the Client is closed.
type Writer struct {
	c       *Client
	segSize int
	// slots holds a token per segment under way: Window of them at most.
	slots chan struct{}
	// ctx is the context of the segments' pushes: the Writer's own, not a
	// call's, since a segment outlives the Write that handed it over.
	// Close cancels it when its own context ends first.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	buf     []*longhaulv1.Insight // gathered, not yet pushed
	written int                   // insights taken by Write; buf[0] is number written-len(buf)

	closed   bool
	closeRes Result
	closeErr error

	mu   sync.Mutex // guards what the segments' goroutines update
	err  error      // the sticky error
	segs []segment  // every segment pushed, in the order written
	res  Result     // the acknowledged streams' Streams, Attempts and edges
}

// segment is what the Writer knows of one segment it pushed.
type segment struct {
	n        int // insights
	accepted int // known durable: a prefix of the segment; n once acknowledged
}

// NewWriter returns a Writer that pushes with c. A cfg field out of range
// (negative) makes every call of the Writer return an error saying so.
func (c *Client) NewWriter(cfg WriterConfig) *Writer {
	w := &Writer{c: c, segSize: max(cfg.SegmentInsights, 1)}
	if cfg.SegmentInsights == 0 {
		w.segSize = min(DefaultSegmentInsights, c.cfg.StreamInsights)
	}
	window := cfg.Window
	if window == 0 {
		window = DefaultWindow
	}
	w.slots = make(chan struct{}, max(window, 1))
	w.ctx, w.cancel = context.WithCancel(context.Background())
	if cfg.SegmentInsights < 0 || cfg.Window < 0 {
		w.err = fmt.Errorf("pushclient: WriterConfig: SegmentInsights (%d) and Window (%d) must not be negative", cfg.SegmentInsights, cfg.Window)
	}
	return w
}

// Write takes insights, to be pushed in the order given after those of
// earlier calls. It returns at once unless a segment is full while Window
// segments are under way: then it waits until one is acknowledged (for as
// long as the edges take, retries included) or ctx ends. When ctx ends
// while it waits, it returns an error wrapping ctx.Err(), and the insights
// are taken all the same: a later Write, Flush or Close pushes them.
// After the Writer failed, Write returns the sticky error and takes
// nothing. A nil insight is an *InputError that ends the Writer.
func (w *Writer) Write(ctx context.Context, insights ...*longhaulv1.Insight) error {
	if err := w.usable(); err != nil {
		return err
	}
	if i := slices.Index(insights, nil); i >= 0 {
		err := clientInputError(fmt.Sprintf("insights[%d]", w.written+i), w.written+i, "must not be null")
		w.fail(err)
		return err
	}
	w.buf = append(w.buf, insights...)
	w.written += len(insights)
	for len(w.buf) >= w.segSize {
		if err := w.send(ctx, w.segSize); err != nil {
			return err
		}
	}
	return nil
}

// Flush pushes what is gathered and waits until every segment is
// acknowledged. It returns nil when every insight written so far is
// durable; the sticky error once the Writer failed (after the segments
// under way ended); an error wrapping ctx.Err() when ctx ends first, the
// segments under way going on (Flush or Close again waits for them).
func (w *Writer) Flush(ctx context.Context) error {
	if err := w.usable(); err != nil {
		return err
	}
	return w.flush(ctx)
}

// Close flushes and ends the Writer, and returns what it pushed: Accepted
// is how many insights are known durable, a prefix in the order written
// (all of them when Close returns nil); Streams, Attempts and the edges are
// the sums over its segments, LastEdge, FirstSeq and LastSeq those of the
// last segment acknowledged. Close returns nil only when every insight
// written is durable; otherwise the sticky error, or an error wrapping
// ctx.Err() when ctx ended first, in which case it abandons the segments
// under way (they may or may not have reached an edge). It returns once no
// goroutine of the Writer is left. Calling it again returns the same.
func (w *Writer) Close(ctx context.Context) (Result, error) {
	if w.closed {
		return w.closeRes, w.closeErr
	}
	w.closed = true
	err := w.flush(ctx)
	if sticky := w.failed(); sticky != nil {
		err = sticky
	}
	w.cancel() // only ends something when ctx ended first
	w.wg.Wait()
	w.closeRes, w.closeErr = w.result(), err
	w.buf = nil
	return w.closeRes, w.closeErr
}

// usable returns why the Writer takes nothing more, or nil.
func (w *Writer) usable() error {
	if w.closed {
		if w.closeErr != nil {
			return w.closeErr
		}
		return errWriterClosed
	}
	return w.failed()
}

// flush pushes what is gathered, unless the Writer failed, and waits for
// every segment under way.
func (w *Writer) flush(ctx context.Context) error {
	for len(w.buf) > 0 && w.failed() == nil {
		if err := w.send(ctx, min(len(w.buf), w.segSize)); err != nil && w.failed() == nil {
			return err
		}
	}
	// Holding every slot means that no segment is under way.
	for i := range cap(w.slots) {
		if err := w.acquire(ctx); err != nil {
			for range i {
				<-w.slots
			}
			return fmt.Errorf("pushclient: Writer: waiting for acknowledgements: %w", err)
		}
	}
	for range cap(w.slots) {
		<-w.slots
	}
	return w.failed()
}

// send pushes the first n gathered insights as a segment, once fewer than
// Window are under way.
func (w *Writer) send(ctx context.Context, n int) error {
	if err := w.acquire(ctx); err != nil {
		return fmt.Errorf("pushclient: Writer: waiting for a segment to be acknowledged: %w", err)
	}
	if err := w.failed(); err != nil { // a segment failed while this one waited
		<-w.slots
		return err
	}
	seg, base := w.buf[:n:n], w.written-len(w.buf)
	w.buf = w.buf[n:]
	if len(w.buf) == 0 {
		w.buf = nil // the next insights need not keep this array alive
	}
	w.mu.Lock()
	k := len(w.segs)
	w.segs = append(w.segs, segment{n: n})
	w.mu.Unlock()
	w.wg.Go(func() {
		defer func() { <-w.slots }() // after record: a Write woken by the slot sees the error
		res, err := w.c.push(w.ctx, seg, base)
		w.record(k, res, err)
	})
	return nil
}

// acquire takes a slot, as soon as one is free (even once ctx has ended),
// or returns ctx's error.
func (w *Writer) acquire(ctx context.Context) error {
	select {
	case w.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case w.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// record takes in how segment k's Push went.
func (w *Writer) record(k int, res Result, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.segs[k].accepted = res.Accepted
	w.res.Streams += res.Streams
	w.res.Attempts += res.Attempts
	for _, e := range res.Edges {
		if !slices.Contains(w.res.Edges, e) {
			w.res.Edges = append(w.res.Edges, e)
		}
	}
	if res.LastEdge != "" {
		w.res.LastEdge, w.res.FirstSeq, w.res.LastSeq = res.LastEdge, res.FirstSeq, res.LastSeq
	}
	if err != nil && w.err == nil {
		w.err = err
	}
}

func (w *Writer) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

func (w *Writer) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// result is the Result so far: Accepted is the prefix of the insights
// written that acknowledged segments (and the durable prefix of the first
// one that is not) cover.
func (w *Writer) result() Result {
	w.mu.Lock()
	defer w.mu.Unlock()
	res := w.res
	res.Edges = slices.Clone(w.res.Edges)
	for _, s := range w.segs {
		res.Accepted += s.accepted
		if s.accepted < s.n {
			break
		}
	}
	return res
}
