package wan

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echo starts a line echo server and returns its address.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line through a new connection to addr and returns how
// long the echo took, or an error (a timeout after wait).
func roundTrip(addr string, wait time.Duration) (time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(wait)); err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func TestLink(t *testing.T) {
	t.Parallel()
	link := New(t, echo(t))
	if _, err := roundTrip(link.Addr(), time.Second); err != nil {
		t.Fatalf("through a plain link: %v", err)
	}

	link.SetRTT(100 * time.Millisecond)
	link.SetRTT(60 * time.Millisecond) // replaces the first
	d, err := roundTrip(link.Addr(), time.Second)
	if err != nil || d < 60*time.Millisecond || d > 95*time.Millisecond {
		t.Errorf("round trip with RTT 60ms: %v, %v", d, err)
	}
	link.SetRTT(0)
	if d, err := roundTrip(link.Addr(), time.Second); err != nil || d > 50*time.Millisecond {
		t.Errorf("round trip with the RTT removed: %v, %v", d, err)
	}

	link.Blackhole()
	if _, err := roundTrip(link.Addr(), 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("through a blackhole: %v, want a timeout", err)
	}
	link.Heal()
	if _, err := roundTrip(link.Addr(), time.Second); err != nil {
		t.Errorf("after Heal: %v", err)
	}

	link.Disable()
	if _, err := roundTrip(link.Addr(), time.Second); err == nil {
		t.Error("a disabled link carried a round trip")
	}
	link.Enable()
	if _, err := roundTrip(link.Addr(), time.Second); err != nil {
		t.Errorf("after Enable: %v", err)
	}

	// An open connection is cut by ResetPeer and by LimitData.
	for name, cut := range map[string]func(){"ResetPeer": link.ResetPeer, "LimitData": func() { link.LimitData(3) }} {
		c, err := net.Dial("tcp", link.Addr())
		if err != nil {
			t.Fatal(err)
		}
		cut()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		_, _ = c.Write([]byte("ping\n"))
		if line, err := bufio.NewReader(c).ReadString('\n'); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: read %q, %v; want the connection closed", name, line, err)
		}
		_ = c.Close()
	}
	link.LimitData(0)
	if _, err := roundTrip(link.Addr(), time.Second); err != nil {
		t.Errorf("after the limit is removed: %v", err)
	}
}
