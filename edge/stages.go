package edge

import (
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The stages an insight goes through on its way to the primary, as the
// edge measures them (see Budget for what each one's budget is):
//
//	push ─► validation ─► wal_sync ─► ack            (the checker's wait)
//	          append ─► queue_wait ─► ship_round_trip ─► apply ─► ack back
//	          └──────────────────── end_to_end ──────────────────────┘
//
// Each is measured as follows.
//
//   - validation: validating one request (per request).
//   - wal_sync: appending one request to the WAL, fsync included (per
//     request; group commit shares an fsync among requests).
//   - ack: from a request's arrival to its answer: Push and CompleteScan
//     whole; for PushStream each message from its receipt to its being
//     durable, since the stream's answer waits for the checker to close it
//     (per request).
//   - queue_wait: from a record's append to the send of the batch holding
//     it (per insight: WAL record).
//   - ship_round_trip: from a batch's send to its ack, less the apply time
//     the ack reports: the link both ways and the wait behind other batches
//     at the primary (per batch).
//   - apply: the primary's time applying the batch, from the ack's
//     apply_time (per batch).
//   - end_to_end: from a record's append to the ack of its batch (per
//     insight). The ack leaves the primary after the commit, so this bounds
//     "visible in the primary" from above by half a round trip.
//
// queue_wait + ship_round_trip + apply = end_to_end for every record.
type stage int

const (
	stageValidation stage = iota
	stageWALSync
	stageAck
	stageQueueWait
	stageRoundTrip
	stageApply
	stageEndToEnd
	numStages
)

// stageNames are the stages' names in metrics (label stage) and in the
// budget report: stable.
var stageNames = [numStages]string{"validation", "wal_sync", "ack", "queue_wait", "ship_round_trip", "apply", "end_to_end"}

func (s stage) String() string { return stageNames[s] }

// A meter's buckets are log-linear: 8 per doubling (each about 9 % wide),
// from 1µs up to 2^27µs (about 134s), and one for anything longer. A
// quantile read from them is within a bucket's width of the exact one,
// and never above the largest value observed.
const (
	meterMin       = time.Microsecond
	meterPerOctave = 8
	meterOctaves   = 27
	meterFinite    = meterOctaves*meterPerOctave + 1 // bounds 2^(i/8)µs, i = 0..216
	meterBuckets   = meterFinite + 1                 // and +Inf
	// meterSlots is how many slots a window is cut into: the window slides
	// by a twelfth of its length, so it covers between 12 and 13 twelfths.
	meterSlots = 12
)

// meterBounds are the buckets' upper bounds (inclusive), in seconds.
var meterBounds = func() [meterFinite]float64 {
	var b [meterFinite]float64
	for i := range b {
		b[i] = meterMin.Seconds() * math.Exp2(float64(i)/meterPerOctave)
	}
	return b
}()

// meterBucket is the bucket of d: the first whose bound is at least d.
func meterBucket(d time.Duration) int {
	if d <= meterMin {
		return 0
	}
	i := int(math.Ceil(math.Log2(float64(d)/float64(meterMin))*meterPerOctave - 1e-9))
	return min(max(i, 0), meterFinite)
}

// meter measures one stage: cumulative counts since the start (exported to
// Prometheus as a histogram) and the same counts per slot of a sliding
// window, for quantiles of the recent past. Prometheus's histograms are
// cumulative, so rates over them would need a Prometheus; the budget
// report and the shipper's steering need the recent quantiles in the
// process. An observation may weigh n (n records with the same latency),
// which a Prometheus Histogram cannot do.
type meter struct {
	mu    sync.Mutex
	slot  time.Duration // a window slot's length
	count uint64
	sum   float64 // seconds
	total [meterBuckets]uint64
	// slots is a ring: slot epoch e (time / slot) lives at e % len.
	slots [meterSlots + 1]meterSlot
}

type meterSlot struct {
	epoch  int64
	n      uint64
	max    time.Duration
	counts [meterBuckets]uint64
}

func newMeter(window time.Duration) *meter {
	m := &meter{slot: max(window/meterSlots, time.Millisecond)}
	for i := range m.slots {
		m.slots[i].epoch = -1
	}
	return m
}

// observe records n observations of d at now.
func (m *meter) observe(now time.Time, d time.Duration, n uint64) {
	if n == 0 {
		return
	}
	d = max(d, 0)
	b := meterBucket(d)
	epoch := now.UnixNano() / int64(m.slot)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.count += n
	m.sum += d.Seconds() * float64(n)
	m.total[b] += n
	s := &m.slots[epoch%int64(len(m.slots))]
	if s.epoch != epoch {
		*s = meterSlot{epoch: epoch}
	}
	s.n += n
	s.max = max(s.max, d)
	s.counts[b] += n
}

// window returns the quantiles qs (in [0, 1]) of what was observed in the
// window ending at now, and how many observations it holds. With none,
// the quantiles are 0.
func (m *meter) window(now time.Time, qs ...float64) ([]time.Duration, uint64) {
	epoch := now.UnixNano() / int64(m.slot)
	var counts [meterBuckets]uint64
	var n uint64
	var top time.Duration
	m.mu.Lock()
	for i := range m.slots {
		s := &m.slots[i]
		if s.epoch < 0 || s.epoch > epoch || epoch-s.epoch >= int64(len(m.slots)) {
			continue
		}
		n += s.n
		top = max(top, s.max)
		for b, c := range s.counts {
			counts[b] += c
		}
	}
	m.mu.Unlock()
	out := make([]time.Duration, len(qs))
	if n == 0 {
		return out, 0
	}
	for i, q := range qs {
		out[i] = quantile(&counts, n, top, q)
	}
	return out, n
}

// quantile interpolates within the bucket holding rank q·n, as Prometheus's
// histogram_quantile does, and caps the result at the largest value seen.
func quantile(counts *[meterBuckets]uint64, n uint64, top time.Duration, q float64) time.Duration {
	rank := q * float64(n)
	var cum uint64
	for b, c := range counts {
		if c == 0 || float64(cum+c) < rank {
			cum += c
			continue
		}
		lo := 0.0
		if b > 0 {
			lo = meterBounds[b-1]
		}
		if b == meterFinite {
			return top
		}
		hi := meterBounds[b]
		v := lo + (hi-lo)*(rank-float64(cum))/float64(c)
		return min(time.Duration(v*float64(time.Second)), top)
	}
	return top
}

// stageSet holds the meters of every stage of one edge. It is a
// prometheus.Collector of longhaul_edge_stage_seconds{region, stage}: a
// histogram per stage with a bucket per doubling from 1µs.
type stageSet struct {
	region string
	window time.Duration
	now    func() time.Time
	m      [numStages]*meter
	desc   *prometheus.Desc
}

func newStageSet(region string, window time.Duration) *stageSet {
	s := &stageSet{region: region, window: window, now: time.Now,
		desc: prometheus.NewDesc("longhaul_edge_stage_seconds",
			"Latency of each stage an insight goes through on the edge (see /v1/budget); end_to_end and queue_wait count insights, ship_round_trip and apply batches, the others requests.",
			[]string{"stage"}, prometheus.Labels{"region": region})}
	for i := range s.m {
		s.m[i] = newMeter(window)
	}
	return s
}

// observe records n observations of d in stage st; a nil set records
// nothing.
func (s *stageSet) observe(st stage, d time.Duration, n uint64) {
	if s == nil {
		return
	}
	s.m[st].observe(s.now(), d, n)
}

// Describe implements prometheus.Collector.
func (s *stageSet) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

// Collect implements prometheus.Collector: the cumulative counts, in
// buckets of one doubling (every eighth of the meter's).
func (s *stageSet) Collect(ch chan<- prometheus.Metric) {
	for st, m := range s.m {
		m.mu.Lock()
		count, sum := m.count, m.sum
		buckets := make(map[float64]uint64, meterOctaves+1)
		var cum uint64
		for b := range meterFinite {
			cum += m.total[b]
			if b%meterPerOctave == 0 {
				buckets[meterBounds[b]] = cum
			}
		}
		m.mu.Unlock()
		ch <- prometheus.MustNewConstHistogram(s.desc, count, sum, buckets, stageNames[st])
	}
}
