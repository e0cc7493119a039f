package scheduler

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/longhaul/longhaul/internal/serve"
)

// Plan is an asset's plan; it decides how often the asset is scanned.
type Plan string

// The plans, as the assets table's CHECK constraint lists them.
const (
	PlanFree       Plan = "free"
	PlanPro        Plan = "pro"
	PlanBusiness   Plan = "business"
	PlanEnterprise Plan = "enterprise"
)

// Plans lists every plan.
var Plans = []Plan{PlanFree, PlanPro, PlanBusiness, PlanEnterprise}

func (p Plan) valid() bool {
	switch p {
	case PlanFree, PlanPro, PlanBusiness, PlanEnterprise:
		return true
	}
	return false
}

// Intervals is the time between two scheduled scans of an asset, by plan.
type Intervals map[Plan]time.Duration

// DefaultIntervals returns the intervals of the seed's pipeline: free every
// 7 days, pro and business every 3, enterprise daily.
func DefaultIntervals() Intervals {
	return Intervals{
		PlanFree:       7 * 24 * time.Hour,
		PlanPro:        3 * 24 * time.Hour,
		PlanBusiness:   3 * 24 * time.Hour,
		PlanEnterprise: 24 * time.Hour,
	}
}

// withDefaults returns a full copy of iv: plans iv leaves out get their
// default interval.
func (iv Intervals) withDefaults() Intervals {
	out := DefaultIntervals()
	for p, d := range iv {
		out[p] = d
	}
	return out
}

func (iv Intervals) validate() error {
	for p, d := range iv {
		if !p.valid() {
			return fmt.Errorf("scheduler: Intervals: unknown plan %q", p)
		}
		if d <= 0 {
			return fmt.Errorf("scheduler: Intervals: %s: %v is not positive", p, d)
		}
	}
	return nil
}

// Defaults of Config.
const (
	DefaultHTTPListen      = "127.0.0.1:7500"
	DefaultMaxConns        = 8
	DefaultPartitions      = 8
	DefaultReplication     = -1
	DefaultBufferFactor    = 1.5
	DefaultRateEvery       = 30 * time.Minute
	DefaultTick            = time.Second
	DefaultSlowDuration    = 2 * time.Second
	DefaultSlowInsights    = 10_000
	DefaultOnDemandPerTick = 1000
	DefaultClaimBatch      = 1000
	DefaultProduceTimeout  = 10 * time.Second
	DefaultLearnEvery      = 10 * time.Second
	DefaultLearnLookback   = time.Hour
)

// Config configures the scheduler service (`longhaul scheduler`). The zero
// value of every field but DatabaseURL and Brokers means its default.
type Config struct {
	// DatabaseURL is the PostgreSQL holding the assets (the primary's
	// database). Required.
	DatabaseURL string
	// MaxConns bounds the database connection pool. Default 8.
	MaxConns int32
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// KafkaOptions come after the scheduler's own client options (TLS, SASL,
	// a logger).
	KafkaOptions []kgo.Opt
	// HTTPListen serves /healthz, /readyz, /metrics, POST /v1/assets and
	// POST /v1/scans. Default "127.0.0.1:7500".
	HTTPListen string
	// Partitions and Replication are those of the topics Start creates when
	// they do not exist. Defaults 8 and -1 (the brokers' default).
	Partitions  int32
	Replication int16
	// Intervals between scheduled scans by plan; plans left out keep their
	// default (DefaultIntervals).
	Intervals Intervals
	// BufferFactor multiplies the rate the schedule needs (Σ assets of a
	// plan ÷ its interval, at least 1/s), so a backlog drains. Default 1.5.
	BufferFactor float64
	// RateEvery is how often the rate is computed again from the number of
	// assets per plan. Default 30m. Registering assets over HTTP computes
	// it again at once.
	RateEvery time.Duration
	// Burst is how many scheduled jobs the token bucket holds at the most.
	// Default: two ticks' worth at the current rate, at least 1.
	Burst int
	// Tick is how often due assets and on-demand requests are claimed.
	// Default 1s.
	Tick time.Duration
	// ClaimBatch is how many due assets one transaction claims at the most
	// (a tick may run several). Default 1000.
	ClaimBatch int
	// OnDemandPerTick bounds the on-demand jobs of one tick; they do not
	// wait for the token bucket. Default 1000.
	OnDemandPerTick int
	// ProduceTimeout bounds how long a tick waits for Kafka to acknowledge
	// its jobs before it rolls back and leaves the assets due. Default 10s.
	ProduceTimeout time.Duration
	// SlowDuration and SlowInsights: an asset whose last scan took at least
	// SlowDuration or found at least SlowInsights insights goes to the slow
	// lane. Defaults 2s and 10,000.
	SlowDuration time.Duration
	SlowInsights int64
	// LearnEvery is how often completed scans are folded into the assets'
	// expected cost (and the due backlog counted). Default 10s.
	LearnEvery time.Duration
	// LearnLookback is how far back in the scans table the first pass after
	// start looks. Default 1h.
	LearnLookback time.Duration
	// Now is the clock of the schedule and the token bucket. Default
	// time.Now. Several schedulers on one database need clocks that agree
	// (NTP): an asset is due when next_scan_at is before a scheduler's now.
	Now    func() time.Time
	Logger *slog.Logger
	// Registry receives every metric and serves /metrics. Default: a new
	// registry with the Go and process collectors.
	Registry *prometheus.Registry
	// TLS, when set, serves the HTTP API over TLS.
	TLS *tls.Config

	// manual: no background tick or maintenance loop; tests drive the
	// service by calling tick, learn and recomputeRate.
	manual bool
}

func (c *Config) setDefaults() {
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.HTTPListen == "" {
		c.HTTPListen = DefaultHTTPListen
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Replication == 0 {
		c.Replication = DefaultReplication
	}
	c.Intervals = c.Intervals.withDefaults()
	if c.BufferFactor == 0 {
		c.BufferFactor = DefaultBufferFactor
	}
	if c.RateEvery == 0 {
		c.RateEvery = DefaultRateEvery
	}
	if c.Tick == 0 {
		c.Tick = DefaultTick
	}
	if c.ClaimBatch == 0 {
		c.ClaimBatch = DefaultClaimBatch
	}
	if c.OnDemandPerTick == 0 {
		c.OnDemandPerTick = DefaultOnDemandPerTick
	}
	if c.ProduceTimeout == 0 {
		c.ProduceTimeout = DefaultProduceTimeout
	}
	if c.SlowDuration == 0 {
		c.SlowDuration = DefaultSlowDuration
	}
	if c.SlowInsights == 0 {
		c.SlowInsights = DefaultSlowInsights
	}
	if c.LearnEvery == 0 {
		c.LearnEvery = DefaultLearnEvery
	}
	if c.LearnLookback == 0 {
		c.LearnLookback = DefaultLearnLookback
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = serve.NewRegistry()
	}
}

func (c *Config) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("scheduler: "+format, args...))
		}
	}
	check(c.DatabaseURL != "", "DatabaseURL is required")
	check(len(c.Brokers) > 0, "Brokers is required")
	check(c.MaxConns >= 2, "MaxConns must be at least 2 (a tick and a request), got %d", c.MaxConns)
	check(c.Partitions >= 1, "Partitions must be at least 1, got %d", c.Partitions)
	check(c.Replication == -1 || c.Replication >= 1, "Replication must be -1 or at least 1, got %d", c.Replication)
	if err := c.Intervals.validate(); err != nil {
		errs = append(errs, err)
	}
	check(c.BufferFactor > 0, "BufferFactor must be positive, got %v", c.BufferFactor)
	check(c.RateEvery > 0, "RateEvery must be positive, got %v", c.RateEvery)
	check(c.Burst >= 0, "Burst must not be negative, got %d", c.Burst)
	check(c.Tick > 0, "Tick must be positive, got %v", c.Tick)
	check(c.ClaimBatch >= 1, "ClaimBatch must be at least 1, got %d", c.ClaimBatch)
	check(c.OnDemandPerTick >= 1, "OnDemandPerTick must be at least 1, got %d", c.OnDemandPerTick)
	check(c.ProduceTimeout > 0, "ProduceTimeout must be positive, got %v", c.ProduceTimeout)
	check(c.SlowDuration > 0, "SlowDuration must be positive, got %v", c.SlowDuration)
	check(c.SlowInsights > 0, "SlowInsights must be positive, got %d", c.SlowInsights)
	check(c.LearnEvery > 0, "LearnEvery must be positive, got %v", c.LearnEvery)
	check(c.LearnLookback > 0, "LearnLookback must be positive, got %v", c.LearnLookback)
	return errors.Join(errs...)
}
