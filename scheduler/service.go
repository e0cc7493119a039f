package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/longhaul/longhaul/internal/kafka"
	"github.com/longhaul/longhaul/internal/serve"
	"github.com/longhaul/longhaul/primary/migrate"
)

// Service runs the scheduler: the database pool (migrated on start), the
// Kafka producer, the tick and maintenance loops and the HTTP endpoints.
type Service struct {
	cfg     Config
	log     *slog.Logger
	pool    *pgxpool.Pool
	kafka   *kgo.Client
	metrics *metrics
	http    *serve.HTTP
	httpLn  net.Listener

	tickMu sync.Mutex // one tick at a time

	learnMu   sync.Mutex
	watermark time.Time // completions up to here are learned (database clock)

	mu      sync.Mutex // guards what follows
	bucket  bucket
	counts  map[Plan]int64
	rateAt  time.Time
	due     int64
	pending int64

	jobsScheduled, jobsOnDemand, jobsFast, jobsSlow, produceErrors atomic.Int64

	kick     chan struct{}
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// Start connects to the database and migrates it, connects to Kafka and
// creates the topics that are missing, computes the rate, and starts
// ticking and serving. The HTTP listener is bound when Start returns (see
// HTTPAddr). ctx bounds the start only.
func Start(ctx context.Context, cfg Config) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1)}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	var err error
	if s.metrics, err = newMetrics(cfg.Registry); err != nil {
		return nil, fmt.Errorf("scheduler: metrics: %w", err)
	}

	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("scheduler: database URL: %w", err)
	}
	pcfg.MaxConns = cfg.MaxConns
	if s.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return nil, fmt.Errorf("scheduler: connect: %w", err)
	}
	n, err := migrate.Up(ctx, s.pool)
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	s.log.Info("scheduler: schema ready", "version", migrate.Latest(), "applied_now", n)

	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		// Without idempotence kgo may fail a record whose request is in
		// flight, so a produce returns within ProduceTimeout even when a
		// broker stops answering: the transaction holding the claimed rows
		// stays short. Duplicates are harmless (at-least-once anyway).
		kgo.DisableIdempotentWrite(),
		kgo.RecordDeliveryTimeout(cfg.ProduceTimeout),
		kgo.ProduceRequestTimeout(cfg.ProduceTimeout),
		// A record is failed (timed out) only when its partition is tried
		// again, after the backoff and the metadata refresh that follow a
		// failure: keep both well within ProduceTimeout.
		kgo.RetryBackoffFn(retryBackoff(cfg.ProduceTimeout)),
		kgo.MetadataMinAge(min(max(cfg.ProduceTimeout/5, 100*time.Millisecond), 5*time.Second)),
	}, cfg.KafkaOptions...)
	if s.kafka, err = kgo.NewClient(opts...); err != nil {
		return nil, fmt.Errorf("scheduler: kafka client: %w", err)
	}
	if err := kafka.EnsureTopics(ctx, s.kafka, cfg.Partitions, cfg.Replication, kafka.Topics...); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	if err := s.recomputeRate(ctx); err != nil {
		return nil, err
	}

	if s.httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
		return nil, fmt.Errorf("scheduler: listen %s: %w", cfg.HTTPListen, err)
	}
	s.httpLn = serve.HTTPListener(s.httpLn, cfg.TLS)
	s.http = serve.StartHTTP(s.httpLn, s.handler(), s.log)

	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	if !cfg.manual {
		s.wg.Go(func() { s.runTicks(loopCtx) })
		s.wg.Go(func() { s.runMaintenance(loopCtx) })
	}
	s.log.Info("scheduler: running", "http", s.httpLn.Addr().String(), "brokers", cfg.Brokers,
		"tick", cfg.Tick, "intervals", cfg.Intervals)
	ok = true
	return s, nil
}

// retryBackoff backs off 100ms, 200ms, … up to a tenth of produceTimeout
// (at least 100ms, at most 2.5s), with up to 20% of jitter.
func retryBackoff(produceTimeout time.Duration) func(int) time.Duration {
	ceiling := min(max(produceTimeout/10, 100*time.Millisecond), 2500*time.Millisecond)
	return func(tries int) time.Duration {
		d := min(100*time.Millisecond<<min(max(tries-1, 0), 8), ceiling)
		return d - time.Duration(rand.Int64N(int64(d)/5+1))
	}
}

// HTTPAddr is the address of the HTTP endpoints.
func (s *Service) HTTPAddr() string { return s.httpLn.Addr().String() }

// Stop stops taking requests (letting those under way finish), stops the
// loops (a tick under way is cancelled: its transaction rolls back and its
// assets stay due), and closes the Kafka client and the pool. Safe to call
// twice.
func (s *Service) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		if s.http != nil {
			s.stopErr = s.http.Stop(ctx)
			s.http = nil
		}
		s.close()
		s.log.Info("scheduler: stopped")
	})
	return s.stopErr
}

// close releases what Start acquired: what is left for Stop after the
// HTTP server, and what a failed Start undoes.
func (s *Service) close() {
	if s.http != nil {
		_ = s.http.Stop(context.Background())
		s.http = nil
	} else if s.httpLn != nil {
		_ = s.httpLn.Close()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if s.kafka != nil {
		s.kafka.Close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
}

// Stats is a snapshot of what the scheduler knows and did.
type Stats struct {
	// Rate is the scheduled jobs per second the token bucket releases, and
	// Burst the jobs it holds at the most.
	Rate  float64
	Burst float64
	// Assets are the registered assets by plan, and RateAt when they were
	// counted (Config.Now's clock).
	Assets map[Plan]int64
	RateAt time.Time
	// Due is the assets due and not scheduled yet, and PendingRequests the
	// on-demand requests not served yet, at the last count.
	Due, PendingRequests int64
	// Jobs produced (and acknowledged) since Start, by reason and by lane.
	Scheduled, OnDemand int64
	Fast, Slow          int64
	// ProduceErrors counts the produces Kafka did not acknowledge.
	ProduceErrors int64
}

// Stats returns a snapshot.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	st := Stats{
		Rate: s.bucket.rate, Burst: s.bucket.burst, Assets: maps.Clone(s.counts), RateAt: s.rateAt,
		Due: s.due, PendingRequests: s.pending,
	}
	s.mu.Unlock()
	st.Scheduled, st.OnDemand = s.jobsScheduled.Load(), s.jobsOnDemand.Load()
	st.Fast, st.Slow = s.jobsFast.Load(), s.jobsSlow.Load()
	st.ProduceErrors = s.produceErrors.Load()
	return st
}
