package pushclient

import (
	"sync"
	"time"

	"github.com/longhaul/longhaul/internal/cooldown"
)

// Picker chooses the edge each attempt goes to and learns how attempts
// went. A Client calls it from many goroutines at once, so its methods must
// be safe for concurrent use; they must not block (no I/O).
type Picker interface {
	// Pick returns the edge to try next, never one in exclude (which the
	// Picker must not keep or change), or false when it has none to offer:
	// the Client then waits (backoff) and asks again with a smaller
	// exclude.
	Pick(exclude map[string]bool) (addr string, ok bool)
	// Failed reports an attempt on addr that failed for a reason of the
	// edge's or of the link's (unavailable, full, too slow, connection
	// lost), not bad input. RetryDelay(err) is the edge's retry hint, if it
	// sent one.
	Failed(addr string, err error)
	// Succeeded reports an attempt on addr that was acknowledged.
	Succeeded(addr string)
}

// OrderedPicker is the default Picker: edges in the configured order of
// preference, skipping those in cooldown after a failure. A preferred edge
// is tried again once its cooldown ends, and kept once it answers. When
// every edge not excluded is in cooldown, it offers the one whose cooldown
// ends first rather than none: the Client's backoff then paces the
// attempts, and the cooldown only orders them.
type OrderedPicker struct {
	edges    []string
	cooldown time.Duration
	now      func() time.Time // the clock; tests replace it

	mu    sync.Mutex
	until map[string]time.Time // end of each edge's cooldown
}

// NewOrderedPicker returns a Picker over edges, most preferred first, that
// avoids an edge for cooldown after a failure (or for the edge's retry
// hint, if longer).
func NewOrderedPicker(edges []string, cooldown time.Duration) *OrderedPicker {
	return &OrderedPicker{edges: append([]string(nil), edges...), cooldown: cooldown, now: time.Now, until: map[string]time.Time{}}
}

// Pick implements Picker.
func (p *OrderedPicker) Pick(exclude map[string]bool) (string, bool) {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	return cooldown.Pick(p.edges, exclude, p.until, now)
}

// Failed implements Picker.
func (p *OrderedPicker) Failed(addr string, err error) {
	d := p.cooldown
	if hint, ok := RetryDelay(err); ok && hint > d {
		d = hint
	}
	end := p.now().Add(d)
	p.mu.Lock()
	defer p.mu.Unlock()
	if end.After(p.until[addr]) {
		p.until[addr] = end
	}
}

// Succeeded implements Picker.
func (p *OrderedPicker) Succeeded(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.until, addr)
}
