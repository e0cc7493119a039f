// Package wan puts a wide-area link between a test and a server: an
// in-process toxiproxy (github.com/Shopify/toxiproxy/v2) proxy on loopback
// that adds round-trip time and faults (blackhole, reset, disconnection, a
// byte limit) to every TCP connection through it.
//
//	link := wan.New(t, primary.Addr())
//	link.SetRTT(150 * time.Millisecond)
//	shipper := … dial link.Addr() …
//	link.Blackhole()
//	…
//	link.Heal()
//
// Toxiproxy's latency toxic delays one direction, so SetRTT puts half the
// round trip on each. The methods change the link for connections already
// open and for new ones. They fail the test through t, so call them from the
// test's goroutine. The proxy is stopped, and its connections closed, when
// the test ends; toxiproxy's logging is discarded.
//
// Outside a test (a benchmark command), Open makes the same link and Close
// stops it:
//
//	link, err := wan.Open(upstream)
//	…
//	defer link.Close()
//	link.SetRTT(80 * time.Millisecond)
//
// Toxiproxy leaves a connection's goroutines blocked for good when the
// connection closes with data still in its toxics (the goroutine that wrote
// to the closed side is gone, the toxics wait to hand it their chunks). A
// package whose tests check for leaked goroutines passes LeakOptions to the
// check:
//
//	func TestMain(m *testing.M) { pgtest.Main(m, wan.LeakOptions()...) }
package wan

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

// LeakOptions tell goleak to ignore the goroutines toxiproxy leaves behind
// (see the package documentation), and only those.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"),
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).read"),
	}
}

// Link is a proxy on 127.0.0.1 to one upstream address.
type Link struct {
	t     testing.TB
	proxy *toxiproxy.Proxy
}

// Names of the toxics a Link manages; each is added at most once per
// direction, and replaced rather than stacked.
const (
	latency   = "latency"
	blackhole = "blackhole"
	limit     = "limit_data"
)

// New starts a proxy on 127.0.0.1 (a free port) to upstream, stopped when t
// ends.
func New(t testing.TB, upstream string) *Link {
	t.Helper()
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(server, "wan", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("wan: start proxy to %s: %v", upstream, err)
	}
	t.Cleanup(p.Stop)
	return &Link{t: t, proxy: p}
}

// Open starts a proxy on 127.0.0.1 (a free port) to upstream for a caller
// that is not a test; Close stops it. The methods of such a link panic
// where those of a test's link fail the test: adding a toxic fails only on
// a bug (toxics are replaced, never stacked), restarting the proxy
// (Enable, ResetPeer) only when another process took its port meanwhile.
func Open(upstream string) (*Link, error) {
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(server, "wan", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("wan: start proxy to %s: %w", upstream, err)
	}
	return &Link{t: notTest{}, proxy: p}, nil
}

// notTest stands in for the test of a link from Open: a Link calls only
// Helper and Fatalf on its t.
type notTest struct{ testing.TB }

func (notTest) Helper()                           {}
func (notTest) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

// Close stops the proxy and closes the connections through it. Safe to call
// twice; a test's link (New) is closed when the test ends.
func (l *Link) Close() { l.proxy.Stop() }

// Addr is the address to dial instead of the upstream's.
func (l *Link) Addr() string {
	l.proxy.Lock()
	defer l.proxy.Unlock()
	return l.proxy.Listen
}

// SetRTT makes the round trip through the link take rtt more (toxiproxy
// works in milliseconds): half of it on the way up, half on the way down.
// It replaces the RTT set before; 0 removes it.
func (l *Link) SetRTT(rtt time.Duration) {
	l.t.Helper()
	half := rtt.Milliseconds() / 2
	for _, dir := range []string{"upstream", "downstream"} {
		l.remove(latency, dir)
		if half > 0 {
			l.add(latency, "latency", dir, fmt.Sprintf(`{"latency": %d}`, half))
		}
	}
}

// Blackhole makes the link swallow every byte in both directions without
// closing anything, as a dead route does: only timeouts and keepalives
// notice. New connections are accepted (the proxy is local) but nothing
// reaches the other side.
func (l *Link) Blackhole() {
	l.t.Helper()
	for _, dir := range []string{"upstream", "downstream"} {
		l.remove(blackhole, dir)
		l.add(blackhole, "timeout", dir, `{"timeout": 0}`)
	}
}

// Heal ends a Blackhole. The connections that lived through it are closed
// (toxiproxy closes them when the toxic goes, and their byte streams lost
// data anyway); new connections work.
func (l *Link) Heal() {
	l.t.Helper()
	for _, dir := range []string{"upstream", "downstream"} {
		l.remove(blackhole, dir)
	}
}

// ResetPeer cuts every connection through the link at once, as a reset from
// the far side would; new connections are accepted again right away.
func (l *Link) ResetPeer() {
	l.t.Helper()
	l.proxy.Stop()
	if err := l.proxy.Start(); err != nil {
		l.t.Fatalf("wan: restart proxy: %v", err)
	}
}

// Disable takes the link down: its connections are closed and new ones are
// refused until Enable.
func (l *Link) Disable() { l.proxy.Stop() }

// Enable brings the link back up on the same address.
func (l *Link) Enable() {
	l.t.Helper()
	if err := l.proxy.Start(); err != nil && err != toxiproxy.ErrProxyAlreadyStarted {
		l.t.Fatalf("wan: restart proxy: %v", err)
	}
}

// LimitData closes each connection once it has carried n bytes downstream
// (from the upstream to the client), counting from when LimitData was
// called for connections already open. It replaces the limit set before;
// n <= 0 removes it.
func (l *Link) LimitData(n int64) {
	l.t.Helper()
	l.remove(limit, "downstream")
	if n > 0 {
		l.add(limit, "limit_data", "downstream", fmt.Sprintf(`{"bytes": %d}`, n))
	}
}

func (l *Link) add(name, typ, dir, attrs string) {
	l.t.Helper()
	body := fmt.Sprintf(`{"name": %q, "type": %q, "stream": %q, "toxicity": 1, "attributes": %s}`,
		name+"_"+dir, typ, dir, attrs)
	if _, err := l.proxy.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
		l.t.Fatalf("wan: add %s toxic %s: %v", typ, dir, err)
	}
}

// remove removes a toxic if it is there.
func (l *Link) remove(name, dir string) {
	if l.proxy.Toxics.GetToxic(name+"_"+dir) == nil {
		return
	}
	// The only error is that the toxic is gone already.
	_ = l.proxy.Toxics.RemoveToxic(context.Background(), name+"_"+dir)
}
