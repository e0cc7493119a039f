package checker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/internal/kafka"
)

// Commits refused by the broker (a third of them, with errors that make the
// client look for its coordinator again) and the group's coordinator moving
// between brokers while two members process jobs: every job is completed at
// least once, and no commit that succeeds passes an unfinished job.
func TestCommitErrorsAndCoordinatorMovesLoseNoJob(t *testing.T) {
	t.Parallel()
	const partitions, jobs = 6, 600
	k, err := kafka.StartEmbedded(3, partitions)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	var refused, commits atomic.Int64
	var rngMu sync.Mutex
	rng := rand.New(rand.NewPCG(7, 7))
	k.ControlKey(kmsg.OffsetCommit.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.KeepControl()
		commits.Add(1)
		rngMu.Lock()
		refuse := rng.IntN(3) == 0
		code := []int16{kerr.NotCoordinator.Code, kerr.CoordinatorNotAvailable.Code, kerr.RequestTimedOut.Code}[rng.IntN(3)]
		rngMu.Unlock()
		if !refuse {
			return nil, nil, false
		}
		refused.Add(1)
		r := req.(*kmsg.OffsetCommitRequest)
		resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})

	type po struct {
		part int32
		off  int64
	}
	var mu sync.Mutex
	finished := map[po]bool{}
	var violations []string
	h := hooks{
		finished: func(_ string, p int32, o int64) { mu.Lock(); finished[po{p, o}] = true; mu.Unlock() },
		committed: func(_ string, p int32, o int64) {
			mu.Lock()
			defer mu.Unlock()
			for x := int64(0); x < o; x++ {
				if !finished[po{p, x}] {
					violations = append(violations, fmt.Sprintf("partition %d committed at %d before offset %d finished", p, o, x))
					return
				}
			}
		},
	}
	ch := funcCheck{name: "t", run: func(ctx context.Context, _ checks.Target, _ func(checks.Finding)) error {
		select {
		case <-time.After(time.Duration(rand.IntN(15)) * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	rec := newRecorder()
	for range 2 {
		c, err := New(Config{Brokers: k.ListenAddrs(), Group: "faulty", Checks: []checks.Check{ch}, Pusher: rec,
			MaxInFlight: 40, CommitInterval: 10 * time.Millisecond, KafkaOpts: fastGroupOpts})
		if err != nil {
			t.Fatal(err)
		}
		c.hooks = h
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	cl := client(t, k)
	var all []*longhaulv1.ScanJob
	for i := 0; i < jobs; i++ {
		all = append(all, testJob(i, fmt.Sprintf("asset-%d", i), "t"))
	}
	produce(t, cl, kafka.TopicFast, all...)
	moves := 0
	waitFor(t, 90*time.Second, "every job completed", func() bool {
		if moves < 20 {
			k.RehashCoordinators()
			moves++
		}
		return rec.distinct() == jobs
	})
	// Commits go on until every partition is committed to its end.
	waitFor(t, 60*time.Second, "every partition committed to its end", func() bool {
		sum := int64(0)
		for p := int32(0); p < partitions; p++ {
			if o := committed(t, cl, "faulty", kafka.TopicFast, p); o > 0 {
				sum += o
			}
		}
		return sum == jobs
	})
	mu.Lock()
	defer mu.Unlock()
	if len(violations) > 0 {
		t.Fatalf("%d commits passed unfinished jobs, first: %s", len(violations), violations[0])
	}
	if refused.Load() == 0 {
		t.Fatal("no commit was refused: the fault was not injected")
	}

	t.Logf("%d jobs; %d commit requests, %d refused; %d coordinator moves; %d completions", jobs, commits.Load(), refused.Load(), moves, len(rec.order))
}
