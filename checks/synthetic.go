package checks

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// Defaults of SyntheticConfig.
const (
	DefaultSyntheticInsights     = 20
	DefaultSyntheticFast         = 20 * time.Millisecond
	DefaultSyntheticSlow         = 5 * time.Second
	DefaultSyntheticSlowFraction = 0.02
	DefaultSyntheticJitter       = 0.2
	DefaultSyntheticVarying      = 0.1
)

// MaxBigInsights is the most insights a "big-N" asset asks for; a larger N
// gives this many. It is the edge's limit on one scan's insight count.
const MaxBigInsights = 10_000_000

// SyntheticConfig shapes the synthetic check's scans. A zero field means its
// default; for SlowFraction, Jitter and Varying a negative value means none.
type SyntheticConfig struct {
	// Insights is the mean number of findings of an asset's scan. Counts are
	// spread exponentially around it, so most assets report a few and some
	// many. Default 20.
	Insights int
	// MaxInsights caps the findings of one scan (except for "big-N" assets).
	// Default 10 × Insights.
	MaxInsights int
	// Fast is how long the scan of a fast asset takes. Default 20ms.
	Fast time.Duration
	// Slow is how long the scan of a slow asset takes. Default 5s.
	Slow time.Duration
	// SlowFraction is the share of assets that are slow, at most 1. Default
	// 0.02.
	SlowFraction float64
	// Jitter spreads durations: an asset's lies in [d×(1−Jitter),
	// d×(1+Jitter)] around Fast or Slow. Less than 1. Default 0.2.
	Jitter float64
	// Varying is the share of an asset's findings that depend on the scan
	// id, at most 1: each scan reports them from a pool twice that size, so
	// successive scans resolve some and find others. Default 0.1.
	Varying float64
	// Sleep waits d or until ctx ends, then returns ctx's error if it ended.
	// Default: a timer that honors ctx. Benchmarks that want findings
	// without the wait pass a function that returns at once.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Validate reports the first field of c that is out of range, by name.
func (c SyntheticConfig) Validate() error {
	switch {
	case c.Insights < 0:
		return fmt.Errorf("synthetic: Insights must not be negative, got %d", c.Insights)
	case c.MaxInsights < 0:
		return fmt.Errorf("synthetic: MaxInsights must not be negative, got %d", c.MaxInsights)
	case c.Fast < 0:
		return fmt.Errorf("synthetic: Fast must not be negative, got %v", c.Fast)
	case c.Slow < 0:
		return fmt.Errorf("synthetic: Slow must not be negative, got %v", c.Slow)
	case math.IsNaN(c.SlowFraction) || c.SlowFraction > 1:
		return fmt.Errorf("synthetic: SlowFraction must be at most 1, got %v", c.SlowFraction)
	case math.IsNaN(c.Jitter) || c.Jitter >= 1:
		return fmt.Errorf("synthetic: Jitter must be less than 1, got %v", c.Jitter)
	case math.IsNaN(c.Varying) || c.Varying > 1:
		return fmt.Errorf("synthetic: Varying must be at most 1, got %v", c.Varying)
	}
	return nil
}

// withDefaults fills in defaults and clamps what Validate refuses.
func (c SyntheticConfig) withDefaults() SyntheticConfig {
	if c.Insights <= 0 {
		c.Insights = DefaultSyntheticInsights
	}
	if c.MaxInsights <= 0 {
		c.MaxInsights = 10 * c.Insights
	}
	if c.Fast <= 0 {
		c.Fast = DefaultSyntheticFast
	}
	if c.Slow <= 0 {
		c.Slow = DefaultSyntheticSlow
	}
	c.SlowFraction = fraction(c.SlowFraction, DefaultSyntheticSlowFraction, 1)
	c.Jitter = fraction(c.Jitter, DefaultSyntheticJitter, 0.99)
	c.Varying = fraction(c.Varying, DefaultSyntheticVarying, 1)
	if c.Sleep == nil {
		c.Sleep = sleepCtx
	}
	return c
}

// fraction maps zero (or NaN) to def, negative to 0, and caps at most.
func fraction(f, def, most float64) float64 {
	switch {
	case f == 0 || math.IsNaN(f):
		return def
	case f < 0:
		return 0
	}
	return min(f, most)
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Synthetic is a check that scans nothing: it makes up findings and a
// duration from a hash (FNV-64a) of the account and asset, so the same asset
// always costs the same and reports the same findings, apart from the part
// that varies with the scan id (SyntheticConfig.Varying). An asset is either
// always slow or always fast, as a real one is, so a scheduler can learn
// from its last scan.
//
// An asset whose name starts with "big-N" followed by a dot or nothing
// ("big-500000.example", "big-0") reports exactly N findings (at most
// MaxBigInsights), whatever Insights and MaxInsights say, and is always
// slow: that is how a test or a benchmark asks for a big scan.
//
// Its kinds are Kinds(); subjects are unique within a scan.
type Synthetic struct {
	cfg SyntheticConfig
}

// NewSynthetic returns the synthetic check. Fields of cfg out of range (see
// Validate) are clamped.
func NewSynthetic(cfg SyntheticConfig) *Synthetic {
	return &Synthetic{cfg: cfg.withDefaults()}
}

// syntheticKinds are the kinds the synthetic check reports, each with the
// noun its subjects start with.
var syntheticKinds = [...]struct{ kind, noun string }{
	{"synthetic.open-port", "port"},
	{"synthetic.weak-cipher", "cipher"},
	{"synthetic.outdated-software", "package"},
	{"synthetic.missing-header", "header"},
	{"synthetic.exposed-path", "path"},
	{"synthetic.dns-misconfig", "record"},
	{"synthetic.cert-issue", "cert"},
	{"synthetic.leaked-secret", "secret"},
}

// Name returns "synthetic".
func (*Synthetic) Name() string { return NameSynthetic }

// Kinds returns the kinds the synthetic check reports.
func (*Synthetic) Kinds() []string {
	out := make([]string, len(syntheticKinds))
	for i, k := range syntheticKinds {
		out[i] = k.kind
	}
	return out
}

// Cost returns how long a scan of t takes (without cancellation) and how
// many findings it reports, without running it.
func (s *Synthetic) Cost(t Target) (time.Duration, int) {
	p := s.plan(t)
	return p.dur, p.n
}

// syntheticChunks is how many parts a scan's sleep and findings are split
// into, alternately, so a checker gets findings while the scan goes on.
const syntheticChunks = 8

// Run sleeps the asset's duration in syntheticChunks parts, reporting a
// share of its findings after each. It returns ctx's error as soon as ctx
// ends.
func (s *Synthetic) Run(ctx context.Context, t Target, report func(Finding)) error {
	p := s.plan(t)
	for c := range syntheticChunks {
		part := p.dur*time.Duration(c+1)/syntheticChunks - p.dur*time.Duration(c)/syntheticChunks
		if err := s.cfg.Sleep(ctx, part); err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			return fmt.Errorf("checks: synthetic: sleep: %w", err)
		}
		lo, hi := c*p.n/syntheticChunks, (c+1)*p.n/syntheticChunks
		for j := lo; j < hi; j++ {
			if (j-lo)%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			report(p.finding(j))
		}
	}
	return nil
}

// syntheticPlan is what a scan of one target does.
type syntheticPlan struct {
	seed seed
	dur  time.Duration
	// n findings: stable ones (indexes [0, stable)), then n-stable picked
	// from the pool [stable, stable+2(n-stable)) starting at offset.
	n, stable int
	offset    int
}

// Streams of an asset's seed, apart from the findings' (0, 1, 2, …).
const (
	streamSlow = math.MaxUint64 - iota
	streamJitter
	streamCount
	streamOffset
)

func (s *Synthetic) plan(t Target) syntheticPlan {
	cfg := &s.cfg
	sd := assetSeed(t.AccountID, t.Asset)
	n, big := bigCount(t.Asset)
	if !big {
		// Exponential around the mean: -mean·ln(1-u).
		u := unit(sd.at(streamCount))
		n = min(int(math.Round(-float64(cfg.Insights)*math.Log1p(-u))), cfg.MaxInsights)
	}
	base := cfg.Fast
	if big || unit(sd.at(streamSlow)) < cfg.SlowFraction {
		base = cfg.Slow
	}
	j := (2*unit(sd.at(streamJitter)) - 1) * cfg.Jitter
	p := syntheticPlan{seed: sd, dur: time.Duration(float64(base) * (1 + j)), n: n, stable: n}
	if v := int(math.Round(float64(n) * cfg.Varying)); v > 0 {
		p.stable = n - v
		scan := fnv.New64a()
		scan.Write([]byte(t.ScanID))
		p.offset = int(seed(scan.Sum64()).at(streamOffset) % uint64(2*v))
	}
	return p
}

// finding returns the j-th finding of the scan.
func (p *syntheticPlan) finding(j int) Finding {
	i := j
	if j >= p.stable {
		pool := 2 * (p.n - p.stable)
		i = p.stable + (p.offset+j-p.stable)%pool
	}
	r := p.seed.at(uint64(i))
	k := syntheticKinds[r%uint64(len(syntheticKinds))]
	var sev longhaulv1.Severity
	switch u := unit(mix(r)); {
	case u < 0.45:
		sev = longhaulv1.Severity_LOW
	case u < 0.75:
		sev = longhaulv1.Severity_MODERATE
	case u < 0.93:
		sev = longhaulv1.Severity_HIGH
	default:
		sev = longhaulv1.Severity_CRITICAL
	}
	// "port-17-3fa2": unique by index, the rest from the hash.
	subject := make([]byte, 0, 32)
	subject = append(subject, k.noun...)
	subject = append(subject, '-')
	subject = strconv.AppendInt(subject, int64(i), 10)
	subject = append(subject, '-')
	subject = strconv.AppendUint(subject, r>>48, 16)
	return Finding{
		Kind:     k.kind,
		Subject:  string(subject),
		Severity: sev,
		Details: map[string]any{
			"index":  i,
			"score":  float64((r>>8)%100) / 10,
			"ref":    "SYN-" + strconv.FormatUint(r>>32, 16),
			"stable": i < p.stable,
		},
	}
}

// bigCount returns N for an asset named "big-N" or "big-N.anything".
func bigCount(asset string) (int, bool) {
	label, _, _ := strings.Cut(asset, ".")
	digits, ok := strings.CutPrefix(label, "big-")
	if !ok || digits == "" {
		return 0, false
	}
	n := 0
	for _, c := range []byte(digits) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = min(n*10+int(c-'0'), MaxBigInsights)
	}
	return n, true
}

// seed is a hash from which independent pseudo-random streams are drawn.
type seed uint64

func assetSeed(accountID, asset string) seed {
	h := fnv.New64a()
	h.Write([]byte(accountID))
	h.Write([]byte{0})
	h.Write([]byte(asset))
	return seed(h.Sum64())
}

// at returns the value of stream i: splitmix64, whose finalizer spreads
// FNV's weak low bits over the whole word.
func (s seed) at(i uint64) uint64 {
	return mix(uint64(s) + (i+1)*0x9e3779b97f4a7c15)
}

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// unit maps x to [0, 1).
func unit(x uint64) float64 { return float64(x>>11) / (1 << 53) }
