package pushclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestWriterStreamsScan: a scan's 10,500 insights written a few hundred at
// a time go out in segments of 1,000 while the writing goes on; Close
// returns once all are acknowledged, and every one reaches PostgreSQL.
func TestWriterStreamsScan(t *testing.T) {
	t.Parallel()
	s := startSystem(t, 1, nil)
	c := newClient(t, Config{Edges: s.addrs(0), ChunkInsights: 250})
	w := c.NewWriter(WriterConfig{SegmentInsights: 1000, Window: 2})
	ctx := context.Background()
	ins := makeInsights("scan-w", "s", 10_500)
	for lo := 0; lo < len(ins); lo += 300 {
		if err := w.Write(ctx, ins[lo:min(lo+300, len(ins))]...); err != nil {
			t.Fatalf("write at %d: %v", lo, err)
		}
		if lo == 3000 {
			// Segments go while the scan goes on, not at its end.
			eventually(t, "segments acknowledged before Close", func() (bool, string) {
				n := counter(c.metrics.insights, s.edges[0].Addr())
				return n >= 2000, fmt.Sprint(n)
			})
		}
	}
	res, err := w.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Accepted: 10_500, Streams: 11, Attempts: 11, Edges: s.addrs(0), LastEdge: s.edges[0].Addr()}
	if res.Accepted != want.Accepted || res.Streams != want.Streams || res.Attempts != want.Attempts ||
		!slices.Equal(res.Edges, want.Edges) || res.LastEdge != want.LastEdge || res.LastSeq < res.FirstSeq {
		t.Errorf("close: %+v, want %+v", res, want)
	}
	if n := counter(c.metrics.insights, s.edges[0].Addr()); n != 10_500 {
		t.Errorf("insights acknowledged: %d, want 10500", n)
	}
	if n := counter(c.metrics.calls, "Push", codes.OK.String()); n != 11 {
		t.Errorf("Push calls: %d, want a segment each (11)", n)
	}
	s.waitRows("scan-w", 10_500)

	if again, err := w.Close(ctx); err != nil || again.Accepted != res.Accepted {
		t.Errorf("second close: %+v, %v; want the first's result", again, err)
	}
	if err := w.Write(ctx, ins[0]); err == nil {
		t.Error("write after close: nil, want an error")
	}
}

// TestWriterWindow: with the edge down, Write takes two segments and
// waits on the third (the window is 2), until its context ends or the
// edge comes back; then everything is acknowledged.
func TestWriterWindow(t *testing.T) {
	t.Parallel()
	s := startSystem(t, 1, nil)
	s.stop(0)
	c := newClient(t, Config{Edges: s.addrs(0), MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	w := c.NewWriter(WriterConfig{SegmentInsights: 100, Window: 2})
	ctx := context.Background()
	ins := makeInsights("scan-win", "s", 400)

	for i := range 2 {
		start := time.Now()
		if err := w.Write(ctx, ins[i*100:(i+1)*100]...); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("write %d, within the window, took %s", i, d)
		}
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := w.Write(short, ins[200:300]...); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write beyond the window: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("write beyond the window returned after %s, before its context ended", d)
	}
	if err := w.Flush(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("flush with the edge down: %v, want DeadlineExceeded", err)
	}

	done := make(chan error, 1)
	go func() { done <- w.Write(ctx, ins[300:]...) }()
	select {
	case err := <-done:
		t.Fatalf("write returned (%v) with the window full and the edge down", err)
	case <-time.After(300 * time.Millisecond):
	}
	s.restart(0)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write once the edge is back: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("write still blocked 30s after the edge came back")
	}
	res, err := w.Close(ctx)
	if err != nil || res.Accepted != 400 || res.Streams != 4 {
		t.Fatalf("close: %+v, %v; want 400 insights in 4 streams", res, err)
	}
	if res.Attempts <= res.Streams {
		t.Errorf("close: %d attempts for %d streams, want retries while the edge was down", res.Attempts, res.Streams)
	}
	s.waitRows("scan-win", 400)
}

// TestWriterBadInput: an insight the edge refuses ends the Writer with an
// InputError that names it among everything written; the segments before
// it are acknowledged, and Accepted says so.
func TestWriterBadInput(t *testing.T) {
	t.Parallel()
	s := startSystem(t, 1, nil)
	c := newClient(t, Config{Edges: s.addrs(0)})
	ctx := context.Background()

	w := c.NewWriter(WriterConfig{SegmentInsights: 1000, Window: 2})
	ins := makeInsights("scan-wbad", "s", 3000)
	ins[2503].Kind = ""
	var writeErr error
	for lo := 0; lo < len(ins) && writeErr == nil; lo += 500 {
		writeErr = w.Write(ctx, ins[lo:lo+500]...)
	}
	res, err := w.Close(ctx)
	var ie *InputError
	if !errors.As(err, &ie) || ie.Index != 2503 || ie.Field != "insights[2503].kind" || status.Code(err) != codes.InvalidArgument {
		t.Fatalf("close: %v; want an InputError for insights[2503].kind", err)
	}
	if writeErr != nil && writeErr != err {
		t.Errorf("write: %v; want nil or the error Close returned (%v)", writeErr, err)
	}
	if res.Accepted != 2000 || res.Streams != 2 || res.Attempts != 3 {
		t.Errorf("close: %+v; want the 2 segments before the bad one accepted, in 3 attempts", res)
	}
	if err := w.Write(ctx, ins[0]); err != ie {
		t.Errorf("write after the error: %v; want the InputError again", err)
	}
	s.waitRows("scan-wbad", 2000)

	// Refused by the client: the index counts from the Writer's first insight.
	w = c.NewWriter(WriterConfig{})
	if err := w.Write(ctx, ins[:3]...); err != nil {
		t.Fatal(err)
	}
	err = w.Write(ctx, ins[3], nil)
	if !errors.As(err, &ie) || ie.Index != 4 || ie.Edge != "" {
		t.Errorf("nil insight: %v; want an InputError for insights[4]", err)
	}
	if res, cerr := w.Close(ctx); cerr != err || res.Accepted != 0 {
		t.Errorf("close after a nil insight: %+v, %v; want nothing accepted and %v", res, cerr, err)
	}

	if _, err := c.NewWriter(WriterConfig{Window: -1}).Close(ctx); err == nil {
		t.Error("a negative Window: Close returned nil, want an error")
	}
}

// TestWriterCloseCancelled: Close whose context ends with segments under
// way (no edge answers) returns the context's error, and leaves nothing
// trying in the background.
func TestWriterCloseCancelled(t *testing.T) {
	t.Parallel()
	c := newClient(t, Config{Edges: []string{closedAddr(t)}, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	w := c.NewWriter(WriterConfig{SegmentInsights: 10, Window: 1})
	ins := makeInsights("scan-wcancel", "s", 25)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	if err := w.Write(ctx, ins...); !errors.Is(err, context.Canceled) {
		t.Fatalf("write: %v; want Canceled (the second segment waits for the first)", err)
	}
	closeCtx, cancelClose := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelClose()
	start := time.Now()
	res, err := w.Close(closeCtx)
	if !errors.Is(err, context.DeadlineExceeded) || res.Accepted != 0 || res.Attempts == 0 {
		t.Fatalf("close: %+v, %v; want DeadlineExceeded after some attempts, nothing accepted", res, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("close took %s", d)
	}
	n := counter(c.metrics.attempts, "PushStream", c.cfg.Edges[0], codes.Unavailable.String())
	time.Sleep(100 * time.Millisecond)
	if m := counter(c.metrics.attempts, "PushStream", c.cfg.Edges[0], codes.Unavailable.String()); n == 0 || m != n {
		t.Errorf("attempts refused as Unavailable: %d at Close, %d 100ms later; want some, and none after Close", n, m)
	}
	if again, err2 := w.Close(context.Background()); err2 != err || again.Attempts != res.Attempts {
		t.Errorf("second close: %+v, %v; want the first's", again, err2)
	}
}
