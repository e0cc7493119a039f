package checker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/internal/kafka"
)

// HeaderError names why a record went to the dead-letter topic (set on
// records that are not valid jobs, which are forwarded as they came).
const HeaderError = "longhaul-error"

type scanOutcome int

const (
	scanOK scanOutcome = iota
	scanOverrun
	scanFailed
	scanAbandoned
)

// process runs one record's job and returns whether it is finished (its
// offset may be committed). It returns false only when ctx ended: the job
// was abandoned and its partition's next owner redoes it.
func (c *Checker) process(ctx context.Context, rec *kgo.Record) bool {
	j, err := kafka.DecodeJob(rec.Value)
	if err != nil {
		c.log.Warn("not a job, forwarded to the dead-letter topic", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
		dead := &kgo.Record{Topic: kafka.TopicDead, Key: rec.Key, Value: rec.Value,
			Headers: []kgo.RecordHeader{{Key: HeaderError, Value: []byte(err.Error())}}}
		if !c.produce(ctx, dead) {
			return false
		}
		c.count("dead", func(s *Stats) { s.Dead++ })
		return true
	}
	mine := c.selectChecks(j)
	if len(mine) == 0 {
		c.m.jobs.WithLabelValues("skipped").Inc()
		return true
	}
	outcomes := make([]scanOutcome, len(mine))
	errs := make([]error, len(mine))
	var wg sync.WaitGroup
	for i, ch := range mine {
		wg.Go(func() { outcomes[i], errs[i] = c.scan(ctx, j, ch) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return false
	}
	var again []string
	var why []string
	failed := false
	for i, o := range outcomes {
		switch o {
		case scanOverrun:
			again = append(again, mine[i].Name())
			why = append(why, fmt.Sprintf("%s: over the fast lane's budget of %s", mine[i].Name(), c.cfg.FastBudget))
		case scanFailed, scanAbandoned:
			again = append(again, mine[i].Name())
			why = append(why, fmt.Sprintf("%s: %v", mine[i].Name(), errs[i]))
			failed = true
		}
	}
	if len(again) == 0 {
		c.m.jobs.WithLabelValues("done").Inc()
		return true
	}
	next := proto.CloneOf(j)
	next.Checks = again
	next.Attempt++
	next.Lane = longhaulv1.Lane_SLOW
	next.LastError = strings.Join(why, "; ")
	if len(next.LastError) > 4096 {
		next.LastError = next.LastError[:4096]
	}
	if d := c.cfg.FastBudget; !failed && c.cfg.Lane == longhaulv1.Lane_FAST {
		next.ExpectedDuration = durationpb.New(d)
	}
	topic := kafka.TopicSlow
	if failed && int(next.Attempt) >= c.cfg.MaxAttempts {
		topic = kafka.TopicDead
	}
	r, err := kafka.JobRecord(topic, next)
	if err != nil { // cannot happen: next came from a valid job
		c.log.Error("hand on", "job", j.GetJobId(), "err", err)
		return true
	}
	if !c.produce(ctx, r) {
		return false
	}
	if topic == kafka.TopicDead {
		c.log.Warn("job failed repeatedly, sent to the dead-letter topic", "job", j.GetJobId(), "asset", j.GetAsset(), "attempt", next.Attempt, "err", next.LastError)
		c.count("dead", func(s *Stats) { s.Dead++ })
	} else {
		c.count("handed_on", func(s *Stats) { s.HandedOn++ })
	}
	return true
}

func (c *Checker) count(outcome string, f func(*Stats)) {
	c.m.jobs.WithLabelValues(outcome).Inc()
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

// selectChecks returns this checker's checks that j asks for (only the
// check of j's kind for an on-demand scan of one kind).
func (c *Checker) selectChecks(j *longhaulv1.ScanJob) []checks.Check {
	var out []checks.Check
	want := ""
	if k := j.GetKind(); k != "" { // the check of that kind only; it reports all of its kinds
		want = checks.KindCheck(k)
	}
	seen := map[string]bool{}
	for _, name := range j.GetChecks() {
		ch := c.checks[name]
		if ch == nil || seen[name] || (want != "" && name != want) {
			continue
		}
		seen[name] = true
		out = append(out, ch)
	}
	return out
}

// produce sends r and waits for Kafka's acknowledgement, retrying until it
// is acknowledged or ctx ends.
func (c *Checker) produce(ctx context.Context, r *kgo.Record) bool {
	backoff := 50 * time.Millisecond
	for {
		err := c.cl.ProduceSync(ctx, r).FirstErr()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		c.log.Warn("produce", "topic", r.Topic, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// scan runs one check on j's asset, then pushes what it found and completes
// the scan.
func (c *Checker) scan(ctx context.Context, j *longhaulv1.ScanJob, ch checks.Check) (scanOutcome, error) {
	name := ch.Name()
	started := c.cfg.Now()
	limit := c.cfg.SlowTimeout
	if c.cfg.Lane == longhaulv1.Lane_FAST {
		limit = c.cfg.FastBudget
	}
	runCtx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := checks.Target{AccountID: j.GetAccountId(), Asset: j.GetAsset(), ScanID: j.GetJobId() + "/" + name, Kind: j.GetKind()}

	var mu sync.Mutex
	type found struct {
		f  checks.Finding
		at time.Time
	}
	byKey := map[[2]string]int{}
	var findings []found
	err := ch.Run(runCtx, t, func(f checks.Finding) {
		at := c.cfg.Now()
		mu.Lock()
		defer mu.Unlock()
		k := [2]string{f.Kind, f.Subject}
		if i, ok := byKey[k]; ok {
			findings[i] = found{f, at}
			return
		}
		byKey[k] = len(findings)
		findings = append(findings, found{f, at})
	})
	outcome := func(o scanOutcome, err error) (scanOutcome, error) {
		label := map[scanOutcome]string{scanOK: "ok", scanOverrun: "overrun", scanFailed: "failed", scanAbandoned: "abandoned"}[o]
		c.m.scans.WithLabelValues(name, label).Inc()
		return o, err
	}
	switch {
	case ctx.Err() != nil:
		return outcome(scanAbandoned, ctx.Err())
	case err != nil && errors.Is(runCtx.Err(), context.DeadlineExceeded) && c.cfg.Lane == longhaulv1.Lane_FAST:
		return outcome(scanOverrun, err)
	case err != nil:
		return outcome(scanFailed, err)
	}
	mu.Lock()
	insights := make([]*longhaulv1.Insight, 0, len(findings))
	for _, f := range findings {
		// As JSON text (details_json): far cheaper for the checker and the
		// edge than a protobuf Struct. nil details are {}.
		details := []byte("{}")
		var err error
		if f.f.Details != nil {
			details, err = json.Marshal(f.f.Details)
		}
		if err != nil {
			mu.Unlock()
			return outcome(scanFailed, fmt.Errorf("%s reported %s/%s with details that are not JSON: %w", name, f.f.Kind, f.f.Subject, err))
		}
		insights = append(insights, &longhaulv1.Insight{
			AccountId: j.GetAccountId(), Asset: j.GetAsset(), Kind: f.f.Kind, Subject: f.f.Subject,
			Severity: f.f.Severity, DetailsJson: string(details), ObservedAt: timestamppb.New(f.at),
			ScanId: t.ScanID, Checker: name,
		})
	}
	mu.Unlock()
	if len(insights) > 0 {
		if err := c.cfg.Pusher.Push(ctx, insights); err != nil {
			if ctx.Err() != nil {
				return outcome(scanAbandoned, err)
			}
			return outcome(scanFailed, fmt.Errorf("push: %w", err))
		}
	}
	finished := c.cfg.Now()
	err = c.cfg.Pusher.Complete(ctx, &longhaulv1.ScanCompletion{
		ScanId: t.ScanID, AccountId: j.GetAccountId(), Asset: j.GetAsset(), Checker: name,
		InsightCount: int64(len(insights)), StartedAt: timestamppb.New(started), FinishedAt: timestamppb.New(finished),
	})
	if err != nil {
		if ctx.Err() != nil {
			return outcome(scanAbandoned, err)
		}
		return outcome(scanFailed, fmt.Errorf("complete: %w", err))
	}
	c.m.scanSeconds.WithLabelValues(name).Observe(finished.Sub(started).Seconds())
	c.m.insights.Add(float64(len(insights)))
	c.mu.Lock()
	c.stats.Scans++
	c.stats.Insights += int64(len(insights))
	c.mu.Unlock()
	return outcome(scanOK, nil)
}
