package wan

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echoBytes sends b through a new connection to addr and reads as many
// bytes back, within wait.
func echoBytes(addr string, b []byte, wait time.Duration) (time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(wait)); err != nil {
		return 0, err
	}
	start := time.Now()
	errc := make(chan error, 1)
	go func() { _, err := c.Write(b); errc <- err }()
	got := make([]byte, len(b))
	if _, err := io.ReadFull(c, got); err != nil {
		return 0, err
	}
	if err := <-errc; err != nil {
		return 0, err
	}
	if !bytes.Equal(got, b) {
		return 0, errors.New("echo differs from what was sent")
	}
	return time.Since(start), nil
}

func TestToxics(t *testing.T) {
	t.Parallel()
	link := New(t, echo(t))

	link.SetLatency(100*time.Millisecond, 40*time.Millisecond)
	for range 5 {
		if d, err := roundTrip(link.Addr(), time.Second); err != nil || d < 55*time.Millisecond || d > 170*time.Millisecond {
			t.Errorf("round trip with RTT 100ms ± 40ms: %v, %v", d, err)
		}
	}
	link.SetLatency(0, 0)
	if d, err := roundTrip(link.Addr(), time.Second); err != nil || d > 50*time.Millisecond {
		t.Errorf("round trip with the latency removed: %v, %v", d, err)
	}

	// 8 KB each way at 20 KB/s: at least 0.4s.
	payload := bytes.Repeat([]byte("0123456789abcdef"), 512)
	link.SetBandwidth(20)
	if d, err := echoBytes(link.Addr(), payload, 5*time.Second); err != nil || d < 350*time.Millisecond {
		t.Errorf("8 KB echoed at 20 KB/s in %v, %v; want at least 0.35s", d, err)
	}
	link.SetBandwidth(0)
	if d, err := echoBytes(link.Addr(), payload, 5*time.Second); err != nil || d > 200*time.Millisecond {
		t.Errorf("8 KB echoed with the limit removed in %v, %v", d, err)
	}

	link.Slice(4, 2, 10*time.Microsecond)
	if _, err := echoBytes(link.Addr(), payload[:1000], 5*time.Second); err != nil {
		t.Errorf("through a slicing link: %v", err)
	}
	link.Slice(0, 0, 0)

	// A reset at the next data upstream, for new connections too, until
	// StopResets; a limit of 3 bytes upstream cuts "ping\n".
	for name, cut := range map[string]func(){
		"ResetOnData": func() { link.ResetOnData(Upstream, 0) },
		"LimitDataUp": func() { link.LimitDataUp(3) },
	} {
		cut()
		if line, err := roundTrip(link.Addr(), time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: read %v, %v; want the connection closed", name, line, err)
		}
		link.StopResets()
		link.LimitDataUp(0)
		if _, err := roundTrip(link.Addr(), time.Second); err != nil {
			t.Errorf("%s: after removing it: %v", name, err)
		}
	}
}
