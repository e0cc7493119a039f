package edge

import (
	"fmt"
	"testing"
	"time"
)

// TestRateLimiter: each client has its own bucket of burst insights that
// fills at rate; a refusal says how long until there is enough; a request
// larger than the bucket passes when it is full; clients idle long enough
// are forgotten (their bucket would be full anyway), and beyond max the
// least recently seen is.
func TestRateLimiter(t *testing.T) {
	t.Parallel()
	l := newRateLimiter(100, 50, 3) // 100/s, burst 50, 3 clients
	now := time.Unix(1_700_000_000, 0)
	allow := func(key string, n int) (bool, time.Duration) { return l.allow(key, n, now) }

	if ok, _ := allow("a", 50); !ok {
		t.Fatal("a full bucket refused its burst")
	}
	ok, wait := allow("a", 10)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("an empty bucket: %v, wait %s; want refused, 100ms", ok, wait)
	}
	if ok, _ := allow("b", 50); !ok {
		t.Fatal("another client was limited by the first")
	}
	now = now.Add(100 * time.Millisecond)
	if ok, _ := allow("a", 10); !ok {
		t.Fatal("refused after the wait it was told")
	}
	if ok, wait := allow("a", 1000); ok || wait != 500*time.Millisecond {
		t.Fatalf("a request larger than the bucket: %v, wait %s; want refused until the bucket is full (500ms)", ok, wait)
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := allow("a", 1000); !ok {
		t.Fatal("a request larger than the bucket refused with the bucket full")
	}
	if ok, _ := allow("a", 1); ok {
		t.Fatal("a large request left tokens behind")
	}

	// Bounded: a fourth client evicts the least recently seen (b).
	allow("c", 1)
	allow("d", 1)
	if n := l.active(now); n != 3 {
		t.Fatalf("%d clients tracked, want 3", n)
	}
	if _, tracked := l.clients["b"]; tracked {
		t.Fatal("b, the least recently seen, is still tracked")
	}
	// Idle clients are dropped.
	now = now.Add(time.Minute)
	if n := l.active(now); n != 0 {
		t.Fatalf("%d clients tracked after a minute idle, want 0", n)
	}
}

func BenchmarkRateLimiter(b *testing.B) {
	l := newRateLimiter(1e9, 1e9, DefaultMaxClients)
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("token:c%d", i)
	}
	now := time.Now()
	b.ResetTimer()
	for i := range b.N {
		l.allow(keys[i%len(keys)], 1000, now)
	}
}
