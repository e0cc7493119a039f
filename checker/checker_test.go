package checker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/internal/kafka"
)

func TestMain(m *testing.M) {
	if arg := os.Getenv(childEnv); arg != "" {
		// This test binary, started by a test, runs a checker until killed.
		os.Exit(runChildChecker(arg))
	}
	goleak.VerifyTestMain(m)
}

// fastGroupOpts make rebalances take milliseconds rather than seconds.
var fastGroupOpts = []kgo.Opt{kgo.HeartbeatInterval(100 * time.Millisecond), kgo.FetchMaxWait(100 * time.Millisecond)}

// A slow job at the head of a partition does not hold back the jobs behind
// it, and the partition's committed offset stays at the slow job until it
// finishes.
func TestSlowJobDoesNotHoldBackFastJobsBehindIt(t *testing.T) {
	t.Parallel()
	k := startKafka(t, 1)
	release := make(chan struct{})
	ch := funcCheck{name: "t", run: func(ctx context.Context, tg checks.Target, report func(checks.Finding)) error {
		if tg.Asset == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		report(checks.Finding{Kind: "t.x", Subject: "s", Severity: longhaulv1.Severity_LOW})
		return nil
	}}
	rec := newRecorder()
	c, err := New(Config{Brokers: k.ListenAddrs(), Checks: []checks.Check{ch}, Pusher: rec,
		FastBudget: time.Minute, CommitInterval: 20 * time.Millisecond, KafkaOpts: fastGroupOpts})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	released := false
	var early []int64
	c.hooks.committed = func(_ string, _ int32, o int64) {
		mu.Lock()
		defer mu.Unlock()
		if !released && o > 0 {
			early = append(early, o)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	cl := client(t, k)
	jobs := []*longhaulv1.ScanJob{testJob(0, "slow", "t")}
	for i := 1; i <= 100; i++ {
		jobs = append(jobs, testJob(i, fmt.Sprintf("fast-%d", i), "t"))
	}
	produce(t, cl, kafka.TopicFast, jobs...)

	waitFor(t, 30*time.Second, "the 100 fast jobs", func() bool { return rec.distinct() == 100 })
	if rec.completed("j000000/t") {
		t.Fatal("the slow job completed before it was released")
	}
	time.Sleep(20 * c.cfg.CommitInterval) // commit rounds that must not pass offset 0
	if got := committed(t, cl, c.Group(), kafka.TopicFast, 0); got != 0 {
		t.Fatalf("committed offset %d while the job at offset 0 runs; want 0", got)
	}
	mu.Lock()
	released = true
	if len(early) > 0 {
		t.Fatalf("committed %v while the job at offset 0 ran", early)
	}
	mu.Unlock()
	close(release)
	waitFor(t, 30*time.Second, "the commit past every job", func() bool {
		return committed(t, cl, c.Group(), kafka.TopicFast, 0) == 101
	})
	if s := c.Stats(); s.Scans != 101 || s.InFlight != 0 {
		t.Fatalf("stats %+v: want 101 scans, none in flight", s)
	}
}

// A fast-lane job over its budget goes to the slow lane with its attempt
// count raised, the fast lane moves on, and a slow-lane checker runs it.
func TestFastLaneHandsOverrunJobsToTheSlowLane(t *testing.T) {
	t.Parallel()
	k := startKafka(t, 2)
	fastCheck := funcCheck{name: "t", run: func(ctx context.Context, tg checks.Target, report func(checks.Finding)) error {
		if tg.Asset == "slow" {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}}
	slowCheck := funcCheck{name: "t", run: func(ctx context.Context, tg checks.Target, report func(checks.Finding)) error {
		report(checks.Finding{Kind: "t.big", Subject: tg.Asset, Severity: longhaulv1.Severity_HIGH, Details: map[string]any{"n": 1}})
		return nil
	}}
	rec := newRecorder()
	fast, _ := runChecker(t, Config{Brokers: k.ListenAddrs(), Checks: []checks.Check{fastCheck}, Pusher: rec,
		FastBudget: 100 * time.Millisecond, CommitInterval: 20 * time.Millisecond, KafkaOpts: fastGroupOpts})
	cl := client(t, k)
	produce(t, cl, kafka.TopicFast, testJob(0, "slow", "t"), testJob(1, "a", "t"), testJob(2, "b", "t"))

	got := consume(t, k, kafka.TopicSlow, 1, 30*time.Second)
	j, err := kafka.DecodeJob(got[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if j.GetJobId() != "j000000" || j.GetAttempt() != 1 || j.GetLane() != longhaulv1.Lane_SLOW || !strings.Contains(j.GetLastError(), "budget") {
		t.Fatalf("handed on: %v", j)
	}
	waitFor(t, 10*time.Second, "fast jobs", func() bool { return rec.completed("j000001/t") && rec.completed("j000002/t") })
	if rec.completed("j000000/t") {
		t.Fatal("the overrun job was completed by the fast lane")
	}
	waitFor(t, 10*time.Second, "the fast lane to count the hand-over", func() bool { return fast.Stats().HandedOn == 1 })

	slow, _ := runChecker(t, Config{Brokers: k.ListenAddrs(), Lane: longhaulv1.Lane_SLOW, Checks: []checks.Check{slowCheck}, Pusher: rec,
		CommitInterval: 20 * time.Millisecond, KafkaOpts: fastGroupOpts})
	waitFor(t, 30*time.Second, "the slow lane to run the job", func() bool { return rec.completed("j000000/t") })
	if s := slow.Stats(); s.Scans != 1 || s.Insights != 1 {
		t.Fatalf("slow lane stats %+v", s)
	}
}

// A job that fails is retried through the slow lane and, after MaxAttempts,
// lands on the dead-letter topic with its error; a record that is not a job
// is forwarded there as it came, with the decoding error in a header. The
// lanes go on with the other jobs.
func TestFailingJobsEndOnTheDeadLetterTopic(t *testing.T) {
	t.Parallel()
	k := startKafka(t, 2)
	var tries sync.Map
	ch := funcCheck{name: "t", run: func(ctx context.Context, tg checks.Target, report func(checks.Finding)) error {
		if tg.Asset == "bad" {
			n, _ := tries.LoadOrStore(tg.ScanID, new(int))
			*n.(*int)++
			return errors.New("connection refused by bad")
		}
		return nil
	}}
	rec := newRecorder()
	cfg := Config{Brokers: k.ListenAddrs(), Checks: []checks.Check{ch}, Pusher: rec, MaxAttempts: 3,
		CommitInterval: 20 * time.Millisecond, KafkaOpts: fastGroupOpts}
	runChecker(t, cfg)
	cfg.Lane = longhaulv1.Lane_SLOW
	runChecker(t, cfg)
	cl := client(t, k)
	produce(t, cl, kafka.TopicFast, testJob(0, "bad", "t"), testJob(1, "good", "t"))
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: kafka.TopicFast, Value: []byte("not a job")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	dead := consume(t, k, kafka.TopicDead, 2, 30*time.Second)
	var sawJob, sawGarbage bool
	for _, r := range dead {
		if string(r.Value) == "not a job" {
			sawGarbage = len(r.Headers) == 1 && r.Headers[0].Key == HeaderError && strings.Contains(string(r.Headers[0].Value), "job")
			continue
		}
		j, err := kafka.DecodeJob(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		sawJob = j.GetJobId() == "j000000" && j.GetAttempt() == 3 && strings.Contains(j.GetLastError(), "connection refused by bad")
	}
	if !sawJob || !sawGarbage {
		t.Fatalf("dead letters: job %v, garbage %v", sawJob, sawGarbage)
	}
	if n, _ := tries.Load("j000000/t"); *n.(*int) != 3 {
		t.Fatalf("the failing job ran %d times, want 3", *n.(*int))
	}
	waitFor(t, 10*time.Second, "the good job", func() bool { return rec.completed("j000001/t") })
}

// Property: with members joining, leaving and crashing while jobs run, every
// job is completed at least once, and no member ever commits an offset past
// a job nobody has finished.
func TestEveryJobRunsAtLeastOnceThroughRebalancesAndCrashes(t *testing.T) {
	t.Parallel()
	seeds := []uint64{1, 2}
	if !testing.Short() {
		seeds = append(seeds, 3, 4)
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { rebalanceScenario(t, seed) })
	}
}

func rebalanceScenario(t *testing.T, seed uint64) {
	const partitions = 8
	rng := rand.New(rand.NewPCG(seed, 0))
	k := startKafka(t, partitions)
	cl := client(t, k)

	type po struct {
		part int32
		off  int64
	}
	var mu sync.Mutex
	finished := map[po]bool{}
	verified := map[int32]int64{} // offsets below are known finished
	var violations []string
	hooks := hooks{
		finished: func(_ string, p int32, o int64) { mu.Lock(); finished[po{p, o}] = true; mu.Unlock() },
		committed: func(_ string, p int32, o int64) {
			mu.Lock()
			defer mu.Unlock()
			for x := verified[p]; x < o; x++ {
				if !finished[po{p, x}] {
					violations = append(violations, fmt.Sprintf("partition %d committed at %d before offset %d finished", p, o, x))
					return
				}
			}
			verified[p] = max(verified[p], o)
		},
	}
	var jitterMu sync.Mutex
	jrng := rand.New(rand.NewPCG(seed, 1)) // the checks' own, under jitterMu
	ch := funcCheck{name: "t", run: func(ctx context.Context, tg checks.Target, report func(checks.Finding)) error {
		jitterMu.Lock()
		d := time.Duration(jrng.IntN(20)) * time.Millisecond
		if jrng.IntN(20) == 0 {
			d = 300 * time.Millisecond
		}
		jitterMu.Unlock()
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	rec := newRecorder()
	type member struct {
		c    *Checker
		stop func()
	}
	var members []member
	join := func() {
		c, err := New(Config{Brokers: k.ListenAddrs(), Group: "prop", Checks: []checks.Check{ch}, Pusher: rec,
			FastBudget: time.Minute, MaxInFlight: 64, AbandonAfter: 100 * time.Millisecond,
			CommitInterval: 20 * time.Millisecond, KafkaOpts: fastGroupOpts})
		if err != nil {
			t.Fatal(err)
		}
		c.hooks = hooks
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Run(ctx) }()
		members = append(members, member{c, func() { cancel(); <-done }})
	}
	total := 0
	wave := func(n int) {
		var jobs []*longhaulv1.ScanJob
		for i := 0; i < n; i++ {
			jobs = append(jobs, testJob(total, fmt.Sprintf("asset-%d", total), "t"))
			total++
		}
		produce(t, cl, kafka.TopicFast, jobs...)
	}
	join()
	join()
	wave(200)
	var kills, leaves, joins int
	// Every scenario joins, leaves, crashes and produces; the seed orders it.
	actions := []int{0, 0, 1, 2, 2, 3, 3, 1}
	rng.Shuffle(len(actions), func(i, j int) { actions[i], actions[j] = actions[j], actions[i] })
	for _, a := range actions {
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
		if (a == 1 || a == 2) && len(members) == 1 {
			join()
			joins++
		}
		switch a {
		case 0:
			join()
			joins++
		case 1:
			i := rng.IntN(len(members))
			members[i].stop()
			members = append(members[:i], members[i+1:]...)
			leaves++
		case 2:
			i := rng.IntN(len(members))
			members[i].c.crash()
			members[i].stop()
			members = append(members[:i], members[i+1:]...)
			kills++
		default:
			wave(100)
		}
	}
	noViolation := func() {
		mu.Lock()
		defer mu.Unlock()
		if len(violations) > 0 {
			t.Fatalf("%d commits passed unfinished jobs, first: %s", len(violations), violations[0])
		}
	}
	waitFor(t, 90*time.Second, fmt.Sprintf("all %d jobs completed", total), func() bool { noViolation(); return rec.distinct() == total })
	waitFor(t, 30*time.Second, "every partition committed to its end", func() bool {
		sum := int64(0)
		for p := int32(0); p < partitions; p++ {
			if o := committed(t, cl, "prop", kafka.TopicFast, p); o > 0 {
				sum += o
			}
		}
		return sum == int64(total)
	})
	for _, m := range members {
		m.stop()
	}
	noViolation()
	rec.mu.Lock()
	redone := len(rec.order) - total
	rec.mu.Unlock()
	t.Logf("seed %d: %d jobs, %d joins, %d leaves, %d kills, %d redone", seed, total, joins, leaves, kills, redone)
}
