// Package checker is the consuming side of the scan pipeline: a checker
// polls scan jobs from one Kafka lane in batches, runs every job in its own
// goroutine (many more at once than the lane has partitions), pushes what the
// checks found to an edge, and commits each partition's offset only up to its
// lowest unfinished job.
//
// The fast lane gives every job a time budget; a job that overruns it is
// handed to the slow lane (its attempt count raised) and the fast lane moves
// on. A job that fails is handed on likewise, and after MaxAttempts it goes
// to the dead-letter topic with its error.
//
// On revocation a checker stops starting the partition's jobs, gives the
// running ones AbandonAfter to finish, cancels the rest, and commits only what
// finished: the partition's new owner redoes the others. Lost partitions
// (the group session ended under it) are abandoned at once, without a commit.
// Jobs count against MaxInFlight from the poll that returned them until a
// commit covers them, so a crash redoes at most MaxInFlight jobs.
package checker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/internal/kafka"
)

// Pusher delivers a scan's results; pushclient.Client is one (through
// FromPushClient), and tests and benchmarks bring their own.
type Pusher interface {
	Push(ctx context.Context, insights []*longhaulv1.Insight) error
	Complete(ctx context.Context, c *longhaulv1.ScanCompletion) error
}

// Defaults.
const (
	DefaultMaxInFlight    = 1000
	DefaultFastBudget     = 5 * time.Second
	DefaultSlowTimeout    = 30 * time.Minute
	DefaultMaxAttempts    = 3
	DefaultAbandonAfter   = 10 * time.Second
	DefaultCommitInterval = 200 * time.Millisecond
)

// Config configures a checker.
type Config struct {
	Brokers []string
	Lane    longhaulv1.Lane
	// Checks are the checks this checker runs; a job's other checks are
	// left to the checkers of those kinds (each kind has its own group).
	Checks []checks.Check
	// Group is the consumer group; by default
	// "longhaul.checker.<lane>.<check names, sorted, joined by +>".
	Group  string
	Pusher Pusher
	// MaxInFlight bounds the jobs polled and not yet covered by a commit.
	MaxInFlight int
	// FastBudget is the fast lane's time budget for one scan.
	FastBudget time.Duration
	// SlowTimeout bounds one scan in the slow lane.
	SlowTimeout time.Duration
	// MaxAttempts: a job handed on this many times goes to the dead-letter
	// topic instead.
	MaxAttempts int
	// AbandonAfter is how long revoked partitions' running jobs may take
	// to finish before they are cancelled (also on shutdown).
	AbandonAfter   time.Duration
	CommitInterval time.Duration
	Logger         *slog.Logger
	Registry       prometheus.Registerer
	Now            func() time.Time
	// Sequential processes each partition's jobs in order, one at a time:
	// the seed's first design, for comparison only.
	Sequential bool
	// KafkaOpts come after the checker's own client options (TLS, SASL,
	// session timeouts...).
	KafkaOpts []kgo.Opt
}

func (c *Config) setDefaults() error {
	if len(c.Brokers) == 0 {
		return errors.New("checker: no Kafka brokers")
	}
	if len(c.Checks) == 0 {
		return errors.New("checker: no checks")
	}
	if c.Pusher == nil {
		return errors.New("checker: no pusher")
	}
	if c.Lane == longhaulv1.Lane_LANE_UNSPECIFIED {
		c.Lane = longhaulv1.Lane_FAST
	}
	if c.Group == "" {
		c.Group = GroupName(c.Lane, c.Checks)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	def(&c.FastBudget, DefaultFastBudget)
	def(&c.SlowTimeout, DefaultSlowTimeout)
	def(&c.AbandonAfter, DefaultAbandonAfter)
	def(&c.CommitInterval, DefaultCommitInterval)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// GroupName is the default consumer group of a lane and a set of checks.
func GroupName(lane longhaulv1.Lane, cs []checks.Check) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Name()
	}
	slices.Sort(names)
	return "longhaul.checker." + kafka.LaneName(lane) + "." + strings.Join(names, "+")
}

type tp struct {
	topic string
	part  int32
}

// job is one polled record on its way to a commit.
type job struct {
	part   *partition
	rec    *kgo.Record
	offset int64
	epoch  int32
	ctx    context.Context
	cancel context.CancelFunc
	// finished is set (under the checker's mutex) when the job's work is
	// done: its results pushed or it was handed on.
	finished bool
	done     chan struct{} // closed when its goroutine returns
}

// Checker consumes one lane.
type Checker struct {
	cfg    Config
	cl     *kgo.Client
	log    *slog.Logger
	m      *metrics
	checks map[string]checks.Check

	commitMu sync.Mutex // one commit at a time; held across revocation
	mu       sync.Mutex
	cond     *sync.Cond
	parts    map[tp]*partition
	inflight int
	stats    Stats

	// hooks let tests watch the offsets; crashed makes the checker stop as
	// if killed: no more commits, jobs cancelled.
	hooks   hooks
	crashed atomic.Bool

	jobsCtx    context.Context // parent of every job's context
	cancelJobs context.CancelFunc
	wg         sync.WaitGroup // job goroutines
}

type hooks struct {
	finished  func(topic string, part int32, offset int64) // under c.mu
	committed func(topic string, part int32, offset int64) // under c.mu
}

// Stats counts what a checker did.
type Stats struct {
	Polled    int64 // records polled
	Finished  int64 // jobs finished (done, handed on or dead-lettered)
	Scans     int64 // scans run to completion and pushed
	Insights  int64 // insights pushed
	HandedOn  int64 // jobs handed to the slow lane (overrun or failure)
	Dead      int64 // jobs sent to the dead-letter topic
	Abandoned int64 // jobs cancelled by revocation, loss or shutdown
	Commits   int64 // successful commits
	InFlight  int   // jobs polled and not covered by a commit
}

// New creates a checker and its Kafka client; Run consumes.
func New(cfg Config) (*Checker, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry, cfg.Lane)
	if err != nil {
		return nil, err
	}
	c := &Checker{cfg: cfg, log: cfg.Logger, m: m, checks: map[string]checks.Check{}, parts: map[tp]*partition{}}
	for _, ch := range cfg.Checks {
		c.checks[ch.Name()] = ch
	}
	c.cond = sync.NewCond(&c.mu)
	c.jobsCtx, c.cancelJobs = context.WithCancel(context.Background())
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(kafka.LaneTopic(cfg.Lane)),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.lost),
		kgo.ProducerLinger(time.Millisecond),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	}, cfg.KafkaOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("checker: kafka client: %w", err)
	}
	c.cl = cl
	return c, nil
}

// Group returns the consumer group.
func (c *Checker) Group() string { return c.cfg.Group }

// Stats returns what the checker did so far.
func (c *Checker) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.InFlight = c.inflight
	return s
}

// Run consumes until ctx ends, then leaves the group: running jobs get
// AbandonAfter to finish, what finished is committed, and the client is
// closed. It returns nil after a clean shutdown.
func (c *Checker) Run(ctx context.Context) error {
	if c.cfg.Sequential {
		return c.runSequential(ctx)
	}
	commitDone := make(chan struct{})
	commitCtx, stopCommits := context.WithCancel(context.Background())
	go func() { defer close(commitDone); c.commitLoop(commitCtx) }()
	stopWait := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stopWait()

	var err error
	for {
		c.mu.Lock()
		for c.inflight >= c.cfg.MaxInFlight && ctx.Err() == nil {
			c.cond.Wait()
		}
		free := c.cfg.MaxInFlight - c.inflight
		c.mu.Unlock()
		if ctx.Err() != nil {
			break
		}
		fs := c.cl.PollRecords(ctx, free)
		if fs.IsClientClosed() || ctx.Err() != nil {
			c.cl.AllowRebalance()
			break
		}
		fs.EachError(func(t string, p int32, e error) {
			c.log.Warn("fetch", "topic", t, "partition", p, "err", e)
			c.m.fetchErrors.Inc()
		})
		c.mu.Lock()
		fs.EachRecord(c.dispatch)
		c.mu.Unlock()
		c.cl.AllowRebalance()
	}
	// Leaving the group revokes every partition: revoked() gives the jobs
	// their time, cancels the rest and commits.
	if c.crashed.Load() {
		c.cancelJobs()
	}
	lctx, cancel := context.WithTimeout(context.Background(), c.cfg.AbandonAfter+30*time.Second)
	if lerr := c.cl.LeaveGroupContext(lctx); lerr != nil {
		c.log.Warn("leave group", "err", lerr)
	}
	cancel()
	c.cl.Close()
	c.cancelJobs()
	c.wg.Wait()
	stopCommits()
	<-commitDone
	return err
}

// dispatch starts a polled record's job. Called with c.mu held.
func (c *Checker) dispatch(r *kgo.Record) {
	key := tp{r.Topic, r.Partition}
	p := c.parts[key]
	if p == nil {
		p = newPartition(r.Topic, r.Partition)
		c.parts[key] = p
	}
	ctx, cancel := context.WithCancel(c.jobsCtx)
	j := &job{part: p, rec: r, offset: r.Offset, epoch: r.LeaderEpoch, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	if !p.add(j) {
		cancel()
		c.log.Warn("record below the partition's tracked offsets, skipped", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset)
		return
	}
	c.inflight++
	c.stats.Polled++
	c.m.inflight.Set(float64(c.inflight))
	c.wg.Add(1)
	go c.run(j)
}

func (c *Checker) run(j *job) {
	defer c.wg.Done()
	defer close(j.done)
	defer j.cancel()
	c.m.running.Inc()
	finished := c.process(j.ctx, j.rec)
	c.m.running.Dec()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !finished {
		c.stats.Abandoned++
		c.m.jobs.WithLabelValues("abandoned").Inc()
		return
	}
	j.finished = true
	c.stats.Finished++
	if c.hooks.finished != nil {
		c.hooks.finished(j.rec.Topic, j.rec.Partition, j.offset)
	}
}

// commitLoop commits every CommitInterval what finished since.
func (c *Checker) commitLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.commit(ctx, nil)
		}
	}
}

// commit commits the commit point of the partitions in only (all owned ones
// when only is nil). It takes commitMu, so it never overlaps a revocation.
func (c *Checker) commit(ctx context.Context, only map[tp]bool) {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	c.commitLocked(ctx, only)
}

func (c *Checker) commitLocked(ctx context.Context, only map[tp]bool) {
	if c.crashed.Load() {
		return
	}
	offsets := map[string]map[int32]kgo.EpochOffset{}
	c.mu.Lock()
	n := 0
	for key, p := range c.parts {
		if p.gone || (only != nil && !only[key]) {
			continue
		}
		off, epoch, ok := p.commitPoint()
		if !ok {
			continue
		}
		if offsets[key.topic] == nil {
			offsets[key.topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[key.topic][key.part] = kgo.EpochOffset{Epoch: epoch, Offset: off}
		n++
	}
	c.mu.Unlock()
	if n == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var failed map[tp]error
	c.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		failed = commitErrors(offsets, resp, err)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	for topic, ps := range offsets {
		for part, eo := range ps {
			key := tp{topic, part}
			if err := failed[key]; err != nil {
				c.m.commitErrors.Inc()
				c.log.Warn("commit", "topic", topic, "partition", part, "offset", eo.Offset, "err", err)
				continue
			}
			p := c.parts[key]
			if p == nil {
				continue
			}
			if c.hooks.committed != nil {
				c.hooks.committed(topic, part, eo.Offset)
			}
			freed := p.committedTo(eo.Offset)
			if !p.gone {
				c.inflight -= freed
			}
		}
	}
	c.stats.Commits++
	c.m.inflight.Set(float64(c.inflight))
	c.cond.Broadcast()
}

// revoked runs when partitions are taken away (a rebalance, or leaving the
// group): the running jobs get AbandonAfter, then are cancelled; what
// finished is committed; the partitions are forgotten.
func (c *Checker) revoked(ctx context.Context, _ *kgo.Client, lost map[string][]int32) {
	c.release(ctx, lost, true)
}

// lost runs when the session ended under us: another member may own the
// partitions already, so nothing is committed and running jobs are
// cancelled at once.
func (c *Checker) lost(ctx context.Context, _ *kgo.Client, lost map[string][]int32) {
	c.release(ctx, lost, false)
}

func (c *Checker) release(ctx context.Context, ps map[string][]int32, graceful bool) {
	keys := map[tp]bool{}
	var running []*job
	c.mu.Lock()
	for topic, parts := range ps {
		for _, part := range parts {
			key := tp{topic, part}
			if p := c.parts[key]; p != nil {
				keys[key] = true
				running = append(running, p.unfinished()...)
			}
		}
	}
	c.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	if graceful {
		timer := time.NewTimer(c.cfg.AbandonAfter)
	wait:
		for _, j := range running {
			select {
			case <-j.done:
			case <-timer.C:
				break wait
			}
		}
		timer.Stop()
	}
	for _, j := range running {
		j.cancel()
	}
	for _, j := range running {
		<-j.done // checks honour their context
	}
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	if graceful {
		c.commitLocked(ctx, keys)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for key := range keys {
		p := c.parts[key]
		p.gone = true
		c.inflight -= len(p.jobs)
		delete(c.parts, key)
	}
	c.m.inflight.Set(float64(c.inflight))
	c.m.rebalances.WithLabelValues(map[bool]string{true: "revoked", false: "lost"}[graceful]).Inc()
	c.cond.Broadcast()
}

// commitErrors returns the partitions of offsets that the commit did not
// cover, with why.
func commitErrors(offsets map[string]map[int32]kgo.EpochOffset, resp *kmsg.OffsetCommitResponse, err error) map[tp]error {
	failed := map[tp]error{}
	if err != nil || resp == nil {
		if err == nil {
			err = errors.New("no response")
		}
		for topic, ps := range offsets {
			for part := range ps {
				failed[tp{topic, part}] = err
			}
		}
		return failed
	}
	answered := map[tp]bool{}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			answered[tp{t.Topic, p.Partition}] = true
			if e := kerr.ErrorForCode(p.ErrorCode); e != nil {
				failed[tp{t.Topic, p.Partition}] = e
			}
		}
	}
	for topic, ps := range offsets {
		for part := range ps {
			if !answered[tp{topic, part}] {
				failed[tp{topic, part}] = errors.New("partition missing from the commit response")
			}
		}
	}
	return failed
}

// crash makes the checker behave as if its process were killed: nothing is
// committed from now on and every job is cancelled; cancel Run's context
// next. (The group sees it leave at once rather than after the session
// timeout; for the offsets that is the same.)
func (c *Checker) crash() {
	c.crashed.Store(true)
	c.cancelJobs()
}

// pushClient adapts pushclient.Client (whose Push also returns what it did).
type pushClient[R any] struct {
	push     func(context.Context, []*longhaulv1.Insight) (R, error)
	complete func(context.Context, *longhaulv1.ScanCompletion) error
}

func (p pushClient[R]) Push(ctx context.Context, ins []*longhaulv1.Insight) error {
	_, err := p.push(ctx, ins)
	return err
}

func (p pushClient[R]) Complete(ctx context.Context, c *longhaulv1.ScanCompletion) error {
	return p.complete(ctx, c)
}

// FromPushClient makes a Pusher of a push client such as pushclient.Client.
func FromPushClient[R any](c interface {
	Push(context.Context, []*longhaulv1.Insight) (R, error)
	Complete(context.Context, *longhaulv1.ScanCompletion) error
}) Pusher {
	return pushClient[R]{push: c.Push, complete: c.Complete}
}
