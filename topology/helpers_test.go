package topology

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// testLogger discards unless TOPOLOGY_LOG is set; lines also go to rec,
// if not nil.
func testLogger(rec *recorder) *slog.Logger {
	var hs []slog.Handler
	if os.Getenv("TOPOLOGY_LOG") != "" {
		hs = append(hs, slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if rec != nil {
		hs = append(hs, rec)
	}
	switch len(hs) {
	case 0:
		return slog.New(slog.DiscardHandler)
	case 1:
		return slog.New(hs[0])
	}
	return slog.New(slog.NewMultiHandler(hs...))
}

// recorder is a slog.Handler that keeps the messages it sees.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}

// count is the number of messages containing s.
func (r *recorder) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}

// observed is an event seen by a member (the observer).
type observed struct {
	observer string
	Event
	at time.Time
}

// eventLog collects the events of several members.
type eventLog struct {
	mu  sync.Mutex
	evs []observed
}

func (l *eventLog) hook(observer string) func(Event) {
	return func(ev Event) {
		now := time.Now()
		l.mu.Lock()
		defer l.mu.Unlock()
		l.evs = append(l.evs, observed{observer: observer, Event: ev, at: now})
	}
}

// find returns the events about member into state, by observer (the first
// of each).
func (l *eventLog) find(member string, state State) map[string]observed {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]observed{}
	for _, ev := range l.evs {
		if ev.Member.Name == member && ev.Member.State == state {
			if _, ok := out[ev.observer]; !ok {
				out[ev.observer] = ev
			}
		}
	}
	return out
}

// testStatus is a member's status, settable by the test.
type testStatus struct{ v atomic.Pointer[Status] }

func newTestStatus(s Status) *testStatus {
	st := &testStatus{}
	st.v.Store(&s)
	return st
}

func (s *testStatus) get() Status  { return *s.v.Load() }
func (s *testStatus) set(v Status) { s.v.Store(&v) }

// startNode starts a member on loopback with the local profile, shut down
// when t ends. configure, if not nil, adjusts the configuration.
func startNode(t *testing.T, region, id string, join []string, configure func(*Config)) *Node {
	t.Helper()
	cfg := Config{Region: region, NodeID: id, BindAddr: "127.0.0.1:0", Join: join, Profile: ProfileLocal,
		GRPCAddr: "127.0.0.1:7300", HTTPAddr: "127.0.0.1:7301", Logger: testLogger(nil)}
	if configure != nil {
		configure(&cfg)
	}
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Shutdown(); err != nil {
			t.Error(err)
		}
	})
	return n
}

// waitFor polls cond every 10ms until it holds, or fails t after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after %s", what, state, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// allSee waits until every node in observers lists every name in want in
// state.
func allSee(t *testing.T, timeout time.Duration, observers []*Node, state State, want ...string) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("every member sees %v %s", want, state), func() (bool, string) {
		for _, o := range observers {
			got := map[string]State{}
			for _, m := range o.Members() {
				got[m.Name] = m.State
			}
			for _, w := range want {
				if s, ok := got[w]; !ok || s != state {
					return false, fmt.Sprintf("%s sees %v", o.Name(), got)
				}
			}
		}
		return true, ""
	})
}

// delayTransport delays every packet and every stream write a member
// sends, by what SetDelay says: the member's link is slow, not broken.
type delayTransport struct {
	memberlist.NodeAwareTransport
	delay   atomic.Int64
	cut     atomic.Bool // partitioned: nothing sent, no stream in or out
	queue   chan delayedPacket
	streams chan net.Conn
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

type delayedPacket struct {
	due  time.Time
	b    []byte
	addr memberlist.Address
}

func newDelayTransport(inner memberlist.NodeAwareTransport) *delayTransport {
	d := &delayTransport{NodeAwareTransport: inner, queue: make(chan delayedPacket, 4096),
		streams: make(chan net.Conn), stop: make(chan struct{})}
	d.wg.Add(2)
	go d.send()
	go d.accept()
	return d
}

func (d *delayTransport) SetDelay(v time.Duration) { d.delay.Store(int64(v)) }

// SetCut partitions the member away (true) or heals it.
func (d *delayTransport) SetCut(v bool) { d.cut.Store(v) }

func (d *delayTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return d.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (d *delayTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if d.cut.Load() {
		return time.Now(), nil // lost on the way
	}
	delay := time.Duration(d.delay.Load())
	if delay == 0 {
		return d.NodeAwareTransport.WriteToAddress(b, addr)
	}
	select {
	case d.queue <- delayedPacket{due: time.Now().Add(delay), b: append([]byte(nil), b...), addr: addr}:
	case <-d.stop:
	}
	return time.Now(), nil
}

// send sends the queued packets when they are due (in order: the delay is
// the same for all).
func (d *delayTransport) send() {
	defer d.wg.Done()
	for {
		select {
		case <-d.stop:
			return
		case p := <-d.queue:
			t := time.NewTimer(time.Until(p.due))
			select {
			case <-d.stop:
				t.Stop()
				return
			case <-t.C:
			}
			_, _ = d.NodeAwareTransport.WriteToAddress(p.b, p.addr)
		}
	}
}

func (d *delayTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return d.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (d *delayTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if d.cut.Load() {
		return nil, errors.New("partitioned")
	}
	c, err := d.NodeAwareTransport.DialAddressTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &delayConn{Conn: c, d: d}, nil
}

func (d *delayTransport) StreamCh() <-chan net.Conn { return d.streams }

// accept hands on the streams others open, their writes delayed.
func (d *delayTransport) accept() {
	defer d.wg.Done()
	for {
		select {
		case <-d.stop:
			return
		case c := <-d.NodeAwareTransport.StreamCh():
			if d.cut.Load() {
				c.Close()
				continue
			}
			select {
			case d.streams <- &delayConn{Conn: c, d: d}:
			case <-d.stop:
				c.Close()
				return
			}
		}
	}
}

// Shutdown shuts the inner transport down first: its listener may be
// handing on a stream, which accept must take.
func (d *delayTransport) Shutdown() error {
	err := d.NodeAwareTransport.Shutdown()
	d.once.Do(func() { close(d.stop) })
	d.wg.Wait()
	return err
}

type delayConn struct {
	net.Conn
	d *delayTransport
}

func (c *delayConn) Write(b []byte) (int, error) {
	if delay := time.Duration(c.d.delay.Load()); delay > 0 {
		time.Sleep(delay)
	}
	return c.Conn.Write(b)
}
