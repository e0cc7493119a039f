package edge

import (
	"container/list"
	"sync"
	"time"
)

// rateLimiter is a token bucket per client: each holds up to burst
// insights and fills at rate insights a second. A request of n insights
// passes when its client's bucket holds n (or, for a request larger than
// the bucket, when the bucket is full) and takes them out; otherwise it is
// refused with the time until the bucket holds enough.
//
// The clients are kept in least-recently-used order, and a client not seen
// for idle is dropped: by then its bucket is full again, exactly what a
// client seen for the first time gets, so dropping it changes nothing.
// Beyond max clients the least recently used is dropped even so: that
// client starts again with a full bucket (the limit grows looser for it,
// never tighter for anyone).
type rateLimiter struct {
	rate  float64 // insights a second
	burst float64
	max   int
	idle  time.Duration

	mu      sync.Mutex
	clients map[string]*list.Element // of *bucket
	lru     *list.List               // most recently used first
}

type bucket struct {
	key    string
	tokens float64
	at     time.Time // when tokens was right
}

func newRateLimiter(rate float64, burst, max int) *rateLimiter {
	idle := time.Minute
	if full := time.Duration(float64(burst) / rate * float64(time.Second)); full > idle {
		idle = full
	}
	return &rateLimiter{rate: rate, burst: float64(burst), max: max, idle: idle,
		clients: map[string]*list.Element{}, lru: list.New()}
}

// allow takes n insights out of key's bucket, or says how long until it
// holds enough.
func (l *rateLimiter) allow(key string, n int, now time.Time) (ok bool, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	var b *bucket
	if e := l.clients[key]; e != nil {
		l.lru.MoveToFront(e)
		b = e.Value.(*bucket)
		if d := now.Sub(b.at); d > 0 {
			b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
			b.at = now
		}
	} else {
		for l.lru.Len() >= l.max {
			l.drop(l.lru.Back())
		}
		b = &bucket{key: key, tokens: l.burst, at: now}
		l.clients[key] = l.lru.PushFront(b)
	}
	need := min(float64(n), l.burst)
	if b.tokens < need {
		secs := (need - b.tokens) / l.rate
		return false, max(time.Millisecond, time.Duration(secs*float64(time.Second)))
	}
	b.tokens -= need
	return true, 0
}

// sweep drops the clients not seen for idle.
func (l *rateLimiter) sweep(now time.Time) {
	for e := l.lru.Back(); e != nil && now.Sub(e.Value.(*bucket).at) >= l.idle; e = l.lru.Back() {
		l.drop(e)
	}
}

func (l *rateLimiter) drop(e *list.Element) {
	delete(l.clients, e.Value.(*bucket).key)
	l.lru.Remove(e)
}

// active is the number of clients seen within idle.
func (l *rateLimiter) active(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	return l.lru.Len()
}
