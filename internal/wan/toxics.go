package wan

import (
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	zlog "github.com/rs/zerolog/log"
)

// Direction is one way through a link: Upstream from the client to the
// upstream server, Downstream back.
type Direction string

const (
	Upstream   Direction = "upstream"
	Downstream Direction = "downstream"
)

// More toxics a Link manages, named like those of wan.go.
const (
	bandwidth = "bandwidth"
	slicer    = "slicer"
	reset     = "reset_peer"
	limitUp   = "limit_data_up"
)

var both = []Direction{Upstream, Downstream}

// SetLatency is SetRTT with jitter: each direction delays every chunk of
// data by rtt/2 ± jitter/2, drawn at random per chunk (toxiproxy's latency
// toxic; it keeps the order of the bytes), so the round trip varies within
// rtt ± jitter. It replaces the latency set before (by SetRTT too); rtt 0
// removes it.
func (l *Link) SetLatency(rtt, jitter time.Duration) {
	l.t.Helper()
	half, j := rtt.Milliseconds()/2, jitter.Milliseconds()/2
	for _, dir := range both {
		l.remove(latency, string(dir))
		if half > 0 {
			l.add(latency, "latency", string(dir), fmt.Sprintf(`{"latency": %d, "jitter": %d}`, half, j))
		}
	}
}

// SetBandwidth limits each direction of every connection to kbps kilobytes
// (1000 bytes) per second. It replaces the limit set before; kbps <= 0
// removes it.
func (l *Link) SetBandwidth(kbps int64) {
	l.t.Helper()
	quietBandwidth.Do(silenceBandwidth)
	for _, dir := range both {
		l.remove(bandwidth, string(dir))
		if kbps > 0 {
			l.add(bandwidth, "bandwidth", string(dir), fmt.Sprintf(`{"rate": %d}`, kbps))
		}
	}
}

// Slice cuts the data in both directions into segments of avg ± variation
// bytes, each written on its own after delay (toxiproxy's slicer toxic): the
// reader sees its messages arrive a few bytes at a time. It replaces the
// slicing set before; avg <= 0 removes it. variation must be below avg.
func (l *Link) Slice(avg, variation int, delay time.Duration) {
	l.t.Helper()
	for _, dir := range both {
		l.remove(slicer, string(dir))
		if avg > 0 {
			l.add(slicer, "slicer", string(dir), fmt.Sprintf(`{"average_size": %d, "size_variation": %d, "delay": %d}`,
				avg, variation, delay.Microseconds()))
		}
	}
}

// ResetOnData resets every connection (TCP RST, unsent data discarded)
// after the next data it carries in dir, after a further wait of after, as
// a peer or middlebox that drops the connection mid-message does. New
// connections are reset too, at their first data in dir, until StopResets.
func (l *Link) ResetOnData(dir Direction, after time.Duration) {
	l.t.Helper()
	l.remove(reset, string(dir))
	l.add(reset, "reset_peer", string(dir), fmt.Sprintf(`{"timeout": %d}`, after.Milliseconds()))
}

// StopResets removes what ResetOnData set, in both directions.
func (l *Link) StopResets() {
	l.t.Helper()
	for _, dir := range both {
		l.remove(reset, string(dir))
	}
}

// LimitDataUp is LimitData the other way: it closes each connection once
// it has carried n bytes upstream (from the client to the upstream),
// counting from when LimitDataUp was called for connections already open.
// It replaces the limit set before; n <= 0 removes it.
func (l *Link) LimitDataUp(n int64) {
	l.t.Helper()
	l.remove(limitUp, string(Upstream))
	if n > 0 {
		l.add(limitUp, "limit_data", string(Upstream), fmt.Sprintf(`{"bytes": %d}`, n))
	}
}

// Toxiproxy's bandwidth toxic, alone of its code, logs through zerolog's
// global logger (at trace level, to stderr) instead of the server's. The
// first SetBandwidth silences that logger, before any bandwidth toxic can
// read it; nothing else in the module writes through it.
var quietBandwidth sync.Once

func silenceBandwidth() { zlog.Logger = zerolog.Nop() }
