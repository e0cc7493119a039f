package topology

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestGossipKey: members sharing a SecretKey form a cluster; a member
// with another key (or none) cannot join it, nor can it read the members'
// gossip; a key of a wrong length is refused.
func TestGossipKey(t *testing.T) {
	t.Parallel()
	key, other := bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{9}, 16)
	withKey := func(k []byte) func(*Config) { return func(c *Config) { c.SecretKey = k } }
	a := startNode(t, "eu", "a", nil, withKey(key))
	b := startNode(t, "eu", "b", []string{a.Addr()}, withKey(key))
	allSee(t, 10*time.Second, []*Node{a, b}, StateAlive, "eu/a", "eu/b")

	stranger := startNode(t, "us", "x", []string{a.Addr()}, withKey(other))
	plain := startNode(t, "us", "y", []string{a.Addr()}, nil)
	time.Sleep(time.Second) // several rejoin attempts (local profile: every 200ms)
	for _, n := range []*Node{a, b, stranger, plain} {
		var names []string
		for _, m := range n.Members() {
			names = append(names, m.Name)
		}
		want := 2
		if n == stranger || n == plain {
			want = 1
		}
		if len(names) != want {
			t.Errorf("%s sees %v; want %d members", n.Name(), names, want)
		}
	}

	cfg := Config{Region: "eu", NodeID: "z", BindAddr: "127.0.0.1:0", SecretKey: []byte("short")}
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "SecretKey must be 16, 24 or 32 bytes") {
		t.Fatalf("a 5-byte key: %v", err)
	}
}
