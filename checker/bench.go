package checker

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/internal/kafka"
)

// BenchConfig configures BenchPipeline, the lanes benchmark: the same
// synthetic jobs through the seed's first consumer (each partition in order),
// the batch-parallel consumer, and batch-parallel consumers on two lanes.
type BenchConfig struct {
	Partitions int // of each lane's topic; default 8
	// Jobs for the throughput phase: a backlog produced at once; scans/s is
	// what was done by the end of Window (or by the last job, if sooner).
	// Defaults 20,000 and 15 s.
	Jobs   int
	Window time.Duration
	// Synthetic shapes the scans; default 98 % ≈ 20 ms, 2 % ≈ 5 s, 5
	// insights each.
	Synthetic   checks.SyntheticConfig
	MaxInFlight int           // default DefaultMaxInFlight
	FastBudget  time.Duration // the fast lane's budget in the lanes mode; default 250 ms
	// Rate and Duration shape the latency phase: jobs produced at a steady
	// rate, fast jobs' time from produce to done measured, with and without
	// slow jobs in the mix. Default 100 jobs/s for 10 s.
	Rate     float64
	Duration time.Duration
	// Progress, when set, is told how far each phase is.
	Progress func(phase string, done, total int)
}

// BenchResult is one consumer design's figures.
type BenchResult struct {
	Mode           string  `json:"mode"` // sequential, parallel, lanes
	Jobs           int     `json:"jobs"` // done in the throughput phase
	Seconds        float64 `json:"seconds"`
	ScansPerSecond float64 `json:"scans_per_second"`
	// Fast jobs' latency from produce to done in the latency phase, with the
	// slow jobs in the mix and without them. Jobs not done when the phase
	// gave up count with the time it waited (Truncated says how many).
	FastP50      float64 `json:"fast_p50_seconds"`
	FastP99      float64 `json:"fast_p99_seconds"`
	FastP99Alone float64 `json:"fast_p99_alone_seconds"`
	Truncated    int     `json:"truncated"`
}

func (c *BenchConfig) setDefaults() {
	if c.Partitions <= 0 {
		c.Partitions = 8
	}
	if c.Jobs <= 0 {
		c.Jobs = 20000
	}
	if c.Window <= 0 {
		c.Window = 15 * time.Second
	}
	if c.Synthetic.Insights <= 0 {
		c.Synthetic.Insights = 5
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.FastBudget <= 0 {
		c.FastBudget = 250 * time.Millisecond
	}
	if c.Rate <= 0 {
		c.Rate = 100
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Progress == nil {
		c.Progress = func(string, int, int) {}
	}
}

// BenchModes are BenchPipeline's consumer designs, in order.
var BenchModes = []string{"sequential", "parallel", "lanes"}

// BenchPipeline runs the lanes benchmark on in-process Kafka clusters.
func BenchPipeline(ctx context.Context, cfg BenchConfig) ([]BenchResult, error) {
	cfg.setDefaults()
	var out []BenchResult
	for _, mode := range BenchModes {
		th, err := benchPhase(ctx, cfg, mode, cfg.Synthetic, mode+" throughput", 0)
		if err != nil {
			return nil, err
		}
		r := BenchResult{Mode: mode, Jobs: th.done, Seconds: th.seconds, ScansPerSecond: float64(th.done) / th.seconds}
		lat, err := benchPhase(ctx, cfg, mode, cfg.Synthetic, mode+" latency", cfg.Rate)
		if err != nil {
			return nil, err
		}
		r.FastP50, r.FastP99, r.Truncated = quantile(lat.fast, 0.50), quantile(lat.fast, 0.99), lat.truncated
		alone := cfg.Synthetic
		alone.SlowFraction = -1 // none
		lat, err = benchPhase(ctx, cfg, mode, alone, mode+" latency without slow jobs", cfg.Rate)
		if err != nil {
			return nil, err
		}
		r.FastP99Alone = quantile(lat.fast, 0.99)
		out = append(out, r)
	}
	return out, nil
}

// benchPusher notes when each scan completed.
type benchPusher struct {
	mu   sync.Mutex
	done map[string]time.Time
	ch   chan struct{}
}

func (p *benchPusher) Push(context.Context, []*longhaulv1.Insight) error { return nil }
func (p *benchPusher) Complete(_ context.Context, c *longhaulv1.ScanCompletion) error {
	p.mu.Lock()
	if _, ok := p.done[c.GetScanId()]; !ok {
		p.done[c.GetScanId()] = time.Now()
	}
	p.mu.Unlock()
	select {
	case p.ch <- struct{}{}:
	default:
	}
	return nil
}

func (p *benchPusher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.done)
}

type phaseResult struct {
	seconds   float64
	done      int
	fast      []float64 // fast jobs' seconds from produce to done
	truncated int       // fast jobs not done when the phase ended
}

// benchPhase runs one phase on a fresh cluster: with rate 0 every job is
// produced at once and the phase ends after cfg.Window (throughput),
// otherwise jobs are produced at rate jobs/s for cfg.Duration and the phase
// waits for them all, five minutes at most (latency).
func benchPhase(ctx context.Context, cfg BenchConfig, mode string, syn checks.SyntheticConfig, phase string, rate float64) (res phaseResult, err error) {
	k, err := kafka.StartEmbedded(1, cfg.Partitions)
	if err != nil {
		return res, err
	}
	defer k.Close()
	check := checks.NewSynthetic(syn)
	pusher := &benchPusher{done: map[string]time.Time{}, ch: make(chan struct{}, 1)}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	start := func(lane longhaulv1.Lane, budget time.Duration) error {
		c, err := New(Config{Brokers: k.ListenAddrs(), Lane: lane, Checks: []checks.Check{check}, Pusher: pusher,
			MaxInFlight: cfg.MaxInFlight, FastBudget: budget, Sequential: mode == "sequential", AbandonAfter: time.Second})
		if err != nil {
			return err
		}
		wg.Go(func() { _ = c.Run(runCtx) })
		return nil
	}
	if mode == "lanes" {
		if err := start(longhaulv1.Lane_FAST, cfg.FastBudget); err != nil {
			return res, err
		}
		if err := start(longhaulv1.Lane_SLOW, 0); err != nil {
			return res, err
		}
	} else if err := start(longhaulv1.Lane_FAST, time.Hour); err != nil {
		return res, err
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(k.ListenAddrs()...), kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		return res, err
	}
	defer cl.Close()
	n := cfg.Jobs
	if rate > 0 {
		n = int(rate * cfg.Duration.Seconds())
	}
	produced := make([]time.Time, n)
	fast := make([]bool, n)
	job := func(i int) *kgo.Record {
		j := &longhaulv1.ScanJob{JobId: fmt.Sprintf("b%07d", i), AccountId: "bench", Asset: fmt.Sprintf("asset-%d.example", i),
			Checks: []string{checks.NameSynthetic}, Lane: longhaulv1.Lane_FAST}
		d, _ := check.Cost(checks.Target{AccountID: j.AccountId, Asset: j.Asset})
		fast[i] = d < cfg.FastBudget
		r, _ := kafka.JobRecord(kafka.TopicFast, j)
		return r
	}
	begin := time.Now()
	if rate == 0 {
		rs := make([]*kgo.Record, n)
		for i := range rs {
			rs[i] = job(i)
		}
		if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			return res, err
		}
		for i := range produced {
			produced[i] = begin
		}
	} else {
		tick := time.Duration(float64(time.Second) / rate)
		for i := 0; i < n; i++ {
			if d := time.Until(begin.Add(time.Duration(i) * tick)); d > 0 {
				time.Sleep(d)
			}
			produced[i] = time.Now()
			if err := cl.ProduceSync(ctx, job(i)).FirstErr(); err != nil {
				return res, err
			}
			cfg.Progress(phase, pusher.count(), n)
		}
	}
	limit := 5 * time.Minute
	if rate == 0 {
		limit = cfg.Window
	}
	giveUp := time.After(time.Until(begin.Add(limit)))
	for pusher.count() < n {
		cfg.Progress(phase, pusher.count(), n)
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-giveUp:
			goto done
		case <-pusher.ch:
		case <-time.After(100 * time.Millisecond):
		}
	}
done:
	cfg.Progress(phase, pusher.count(), n)
	res.seconds = time.Since(begin).Seconds()
	res.done = pusher.count()
	now := time.Now()
	pusher.mu.Lock()
	for i := 0; i < n; i++ {
		if !fast[i] {
			continue
		}
		at, ok := pusher.done[fmt.Sprintf("b%07d/%s", i, checks.NameSynthetic)]
		if !ok {
			at = now
			res.truncated++
		}
		res.fast = append(res.fast, at.Sub(produced[i]).Seconds())
	}
	pusher.mu.Unlock()
	return res, nil
}

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(math.Ceil(q*float64(len(s))))-1)]
}
