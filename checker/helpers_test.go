package checker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/internal/kafka"
)

func startKafka(t testing.TB, partitions int) *kafka.Embedded {
	t.Helper()
	k, err := kafka.StartEmbedded(1, partitions)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

func client(t testing.TB, k *kafka.Embedded, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(k.ListenAddrs()...), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produce(t testing.TB, cl *kgo.Client, topic string, jobs ...*longhaulv1.ScanJob) {
	t.Helper()
	var rs []*kgo.Record
	for _, j := range jobs {
		r, err := kafka.JobRecord(topic, j)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	if err := cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func testJob(i int, asset string, checkNames ...string) *longhaulv1.ScanJob {
	return &longhaulv1.ScanJob{JobId: fmt.Sprintf("j%06d", i), AccountId: "acct", Asset: asset, Checks: checkNames, Lane: longhaulv1.Lane_FAST}
}

// funcCheck is a check whose behaviour the test decides.
type funcCheck struct {
	name string
	run  func(ctx context.Context, t checks.Target, report func(checks.Finding)) error
}

func (f funcCheck) Name() string { return f.name }
func (f funcCheck) Run(ctx context.Context, t checks.Target, report func(checks.Finding)) error {
	return f.run(ctx, t, report)
}

// recorder is a Pusher that remembers what was pushed and completed.
type recorder struct {
	mu          sync.Mutex
	insights    int
	completions map[string]int // scan id -> times completed
	order       []string       // scan ids in completion order
	changed     chan struct{}
}

func newRecorder() *recorder {
	return &recorder{completions: map[string]int{}, changed: make(chan struct{}, 1)}
}

func (r *recorder) Push(_ context.Context, ins []*longhaulv1.Insight) error {
	r.mu.Lock()
	r.insights += len(ins)
	r.mu.Unlock()
	return nil
}

func (r *recorder) Complete(_ context.Context, c *longhaulv1.ScanCompletion) error {
	r.mu.Lock()
	r.completions[c.GetScanId()]++
	r.order = append(r.order, c.GetScanId())
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return nil
}

func (r *recorder) completed(scanID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.completions[scanID] > 0
}

func (r *recorder) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.completions)
}

// runChecker starts a checker; the returned stop cancels it and waits.
func runChecker(t testing.TB, cfg Config) (*Checker, func()) {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("checker run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

// committed returns the group's committed offset of a partition (-1: none).
func committed(t testing.TB, cl *kgo.Client, group, topic string, part int32) int64 {
	t.Helper()
	resp, err := kadm.NewClient(cl).FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := resp.Lookup(topic, part); ok && o.Err == nil {
		return o.At
	}
	return -1
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// consume reads n records of topic from the start.
func consume(t testing.TB, k *kafka.Embedded, topic string, n int, within time.Duration) []*kgo.Record {
	t.Helper()
	cl := client(t, k, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: got %d records, want %d", topic, len(out), n)
		}
		out = append(out, fs.Records()...)
	}
	return out
}
