package wan

import (
	"testing"
	"time"
)

func TestOpen(t *testing.T) {
	t.Parallel()
	link, err := Open(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	link.SetRTT(60 * time.Millisecond)
	d, err := roundTrip(link.Addr(), time.Second)
	if err != nil || d < 60*time.Millisecond || d > 95*time.Millisecond {
		t.Errorf("round trip with RTT 60ms: %v, %v", d, err)
	}
	link.Close()
	if _, err := roundTrip(link.Addr(), time.Second); err == nil {
		t.Error("a closed link carried a round trip")
	}
	link.Close() // a second Close does nothing
}
