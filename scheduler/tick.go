package scheduler

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/kafka"
)

// requestsPerTick bounds the on-demand requests one tick looks at; their
// jobs are bounded by Config.OnDemandPerTick.
const requestsPerTick = 100

// candidate is an asset about to get a job, as sqlClaimDue and
// sqlRequestAssets return it.
type candidate struct {
	account, asset string
	plan           Plan
	checks         []string
	durationMs     *int64 // of the last scan; nil: unknown
	insights       *int64 // of the last scan; nil: unknown
}

func scanCandidate(row pgx.CollectableRow) (candidate, error) {
	var c candidate
	var plan string
	err := row.Scan(&c.account, &c.asset, &plan, &c.checks, &c.durationMs, &c.insights)
	c.plan = Plan(plan)
	return c, err
}

// lane is the slow lane for an asset whose last scan was expensive, the
// fast lane otherwise; an unknown cost is fast, because the fast lane hands
// the jobs that overrun its budget to the slow lane itself.
func (s *Service) lane(c *candidate) longhaulv1.Lane {
	if c.durationMs != nil && time.Duration(*c.durationMs)*time.Millisecond >= s.cfg.SlowDuration ||
		c.insights != nil && *c.insights >= s.cfg.SlowInsights {
		return longhaulv1.Lane_SLOW
	}
	return longhaulv1.Lane_FAST
}

// newJobID returns 16 random lower-case hex digits. The id of a job that
// runs one check for an on-demand request of one kind starts with 'k'
// instead (not a hex digit): its cost says nothing of a full scan's, and
// the learning pass skips it.
func newJobID(oneCheck bool) string {
	var b [8]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand)
	id := hex.EncodeToString(b[:])
	if oneCheck {
		id = "k" + id[1:]
	}
	return id
}

// job makes c's job. With check set, the job runs that check only.
func (s *Service) job(c *candidate, now time.Time, onDemand bool, kind, check string) *longhaulv1.ScanJob {
	checks := c.checks
	if check != "" {
		checks = []string{check}
	}
	j := &longhaulv1.ScanJob{
		JobId:       newJobID(check != ""),
		AccountId:   c.account,
		Asset:       c.asset,
		Checks:      checks,
		Lane:        s.lane(c),
		ScheduledAt: timestamppb.New(now),
		OnDemand:    onDemand,
		Kind:        kind,
	}
	if c.durationMs != nil {
		j.ExpectedDuration = durationpb.New(time.Duration(max(0, *c.durationMs)) * time.Millisecond)
	}
	if c.insights != nil {
		j.ExpectedInsights = max(0, *c.insights)
	}
	return j
}

// produce sends jobs to their lanes and waits for Kafka's acknowledgement
// of all of them (at most ProduceTimeout). A job that is not valid (an
// asset row written around the API) is left out and logged; the caller
// moves its asset on all the same, so that one bad row does not stop the
// schedule.
func (s *Service) produce(ctx context.Context, jobs []*longhaulv1.ScanJob, reason string) error {
	recs := make([]*kgo.Record, 0, len(jobs))
	sent := make([]*longhaulv1.ScanJob, 0, len(jobs))
	for _, j := range jobs {
		rec, err := kafka.JobRecord(kafka.LaneTopic(j.GetLane()), j)
		if err != nil {
			s.metrics.invalidJobs.Inc()
			s.log.Error("scheduler: asset makes no valid job; skipped for an interval", "account_id", j.GetAccountId(), "asset", j.GetAsset(), "err", err)
			continue
		}
		recs = append(recs, rec)
		sent = append(sent, j)
	}
	if len(recs) == 0 {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.ProduceTimeout)
	defer cancel()
	if err := s.kafka.ProduceSync(pctx, recs...).FirstErr(); err != nil {
		s.metrics.produceErrors.Inc()
		s.produceErrors.Add(1)
		return fmt.Errorf("scheduler: produce %d jobs: %w", len(recs), err)
	}
	for _, j := range sent {
		lane := kafka.LaneName(j.GetLane())
		s.metrics.jobs.WithLabelValues(lane, reason).Inc()
		if j.GetLane() == longhaulv1.Lane_SLOW {
			s.jobsSlow.Add(1)
		} else {
			s.jobsFast.Add(1)
		}
		if reason == reasonOnDemand {
			s.jobsOnDemand.Add(1)
		} else {
			s.jobsScheduled.Add(1)
		}
	}
	return nil
}

// tickResult is what one tick produced.
type tickResult struct {
	onDemand, scheduled int
}

// tick serves pending on-demand requests, then claims as many due assets
// as the token bucket allows, ClaimBatch per transaction.
func (s *Service) tick(ctx context.Context) (tickResult, error) {
	s.tickMu.Lock()
	defer s.tickMu.Unlock()
	now := s.cfg.Now()
	var res tickResult
	var err error
	if res.onDemand, err = s.serveOnDemand(ctx, now); err != nil {
		s.metrics.tickErrors.Inc()
		return res, err
	}
	s.mu.Lock()
	allowed := s.bucket.available(now)
	s.mu.Unlock()
	for allowed > 0 {
		want := min(allowed, s.cfg.ClaimBatch)
		got, err := s.claimDue(ctx, now, want)
		s.mu.Lock()
		s.bucket.take(got)
		s.mu.Unlock()
		res.scheduled += got
		allowed -= got
		if err != nil {
			s.metrics.tickErrors.Inc()
			return res, err
		}
		if got < want {
			break
		}
	}
	return res, nil
}

// claimDue claims up to n due assets, produces their jobs and, once Kafka
// has acknowledged them, moves their next scan one interval on, all in one
// transaction: if producing fails, the transaction rolls back and the
// assets stay due. If the commit fails after the jobs went out, the assets
// are scheduled again later (at least once). It returns the assets
// scheduled.
func (s *Service) claimDue(ctx context.Context, now time.Time, n int) (int, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("scheduler: claim due assets: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	rows, _ := tx.Query(ctx, sqlClaimDue, now, n)
	due, err := pgx.CollectRows(rows, scanCandidate)
	if err != nil {
		return 0, fmt.Errorf("scheduler: claim due assets: %w", err)
	}
	if len(due) == 0 {
		return 0, tx.Commit(ctx)
	}
	jobs := make([]*longhaulv1.ScanJob, len(due))
	accounts, assets, ids := make([]string, len(due)), make([]string, len(due)), make([]string, len(due))
	next := make([]time.Time, len(due))
	for i := range due {
		c := &due[i]
		jobs[i] = s.job(c, now, false, "", "")
		accounts[i], assets[i], ids[i] = c.account, c.asset, jobs[i].GetJobId()
		next[i] = now.Add(s.cfg.Intervals[c.plan])
	}
	if err := s.produce(ctx, jobs, reasonScheduled); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, sqlScheduled, accounts, assets, ids, next, now); err != nil {
		return 0, fmt.Errorf("scheduler: %d jobs produced, recording them failed (the assets stay due): %w", len(due), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("scheduler: %d jobs produced, recording them failed (the assets stay due): %w", len(due), err)
	}
	return len(due), nil
}

// request is a pending on-demand request.
type request struct {
	id                 int64
	account            string
	asset, check, kind *string
	cursor             *string
}

// serveOnDemand produces the jobs of pending on-demand requests, oldest
// first, up to OnDemandPerTick jobs, regardless of the token bucket. A
// request for many assets is served a page at a time over several ticks.
// Like claimDue, the requests' progress is committed only once Kafka has
// acknowledged the jobs.
func (s *Service) serveOnDemand(ctx context.Context, now time.Time) (int, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("scheduler: claim scan requests: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	rows, _ := tx.Query(ctx, sqlClaimRequests, requestsPerTick)
	reqs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (request, error) {
		var r request
		err := row.Scan(&r.id, &r.account, &r.asset, &r.check, &r.kind, &r.cursor)
		return r, err
	})
	if err != nil {
		return 0, fmt.Errorf("scheduler: claim scan requests: %w", err)
	}
	if len(reqs) == 0 {
		return 0, tx.Commit(ctx)
	}
	var (
		jobs    []*longhaulv1.ScanJob
		ids     []int64
		cursors []*string
		counts  []int32
		done    []bool
		budget  = s.cfg.OnDemandPerTick
	)
	for _, r := range reqs {
		if budget == 0 {
			break
		}
		rows, _ := tx.Query(ctx, sqlRequestAssets, r.account, r.asset, r.check, r.cursor, budget+1)
		page, err := pgx.CollectRows(rows, scanCandidate)
		if err != nil {
			return 0, fmt.Errorf("scheduler: scan request %d: %w", r.id, err)
		}
		more := len(page) > budget
		if more {
			page = page[:budget]
		}
		for i := range page {
			jobs = append(jobs, s.job(&page[i], now, true, deref(r.kind), deref(r.check)))
		}
		budget -= len(page)
		var cursor *string
		if len(page) > 0 {
			cursor = &page[len(page)-1].asset
		}
		ids, cursors, counts, done = append(ids, r.id), append(cursors, cursor), append(counts, int32(len(page))), append(done, !more)
	}
	if err := s.produce(ctx, jobs, reasonOnDemand); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, sqlRequestsServed, ids, cursors, counts, done); err != nil {
		return 0, fmt.Errorf("scheduler: %d on-demand jobs produced, recording them failed (they go out again): %w", len(jobs), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("scheduler: %d on-demand jobs produced, recording them failed (they go out again): %w", len(jobs), err)
	}
	return len(jobs), nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
