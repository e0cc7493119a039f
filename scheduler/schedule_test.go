package scheduler

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/kafka"
)

// TestEveryAssetGetsAJob: with intervals of a second or two and a fast
// tick (the real loops, the wall clock), every asset gets jobs on Kafka,
// keyed by asset, with its checks, on the fast lane; an asset whose scan
// the primary recorded as long, and one whose scan found many insights,
// go to the slow lane once the scheduler has learned it.
func TestEveryAssetGetsAJob(t *testing.T) {
	t.Parallel()
	b := setup(t, false, Config{
		Intervals:    Intervals{PlanFree: 2 * time.Second, PlanPro: 1500 * time.Millisecond, PlanBusiness: 1500 * time.Millisecond, PlanEnterprise: time.Second},
		BufferFactor: 2, Tick: 20 * time.Millisecond, LearnEvery: 50 * time.Millisecond,
	})
	assets := makeAssets("acme", "a", 200, Plans...)
	b.register(t, assets)
	b.svc.kickRate()
	const long, many = "acme/a-0001.example", "acme/a-0002.example"

	// Every asset's first job: on the fast lane (no cost known yet).
	firstJob := map[string]*longhaulv1.ScanJob{}
	b.jobs(t, 15*time.Second, func(ps []produced) bool {
		for _, p := range ps {
			k := p.job.GetAccountId() + "/" + p.job.GetAsset()
			if firstJob[k] == nil {
				firstJob[k] = p.job
			}
		}
		return len(firstJob) == len(assets)
	})

	// The primary records the completions of the first jobs of two assets,
	// as it does: one scan row per check, "<job_id>/<check>".
	for _, c := range []struct {
		key      string
		took     time.Duration
		insights int64
	}{{long, 5 * time.Second, 3}, {many, 100 * time.Millisecond, 20_000}} {
		j := firstJob[c.key]
		for i, check := range j.GetChecks() {
			insights := int64(0)
			if i == 0 {
				insights = c.insights
			}
			b.exec(t, `INSERT INTO scans (scan_id, account_id, asset, checker, insight_count, started_at, finished_at, completed_at)
				VALUES ($1, $2, $3, $4, $5, now() - $6::int8 * interval '1 microsecond', now(), now())`,
				j.GetJobId()+"/"+check, j.GetAccountId(), j.GetAsset(), check, insights, c.took.Microseconds())
		}
	}
	slow := func(ps []produced) bool {
		found := map[string]bool{}
		for _, p := range ps {
			if p.topic == kafka.TopicSlow {
				found[p.key] = true
			}
		}
		return found[long] && found[many]
	}
	all := b.jobs(t, 15*time.Second, slow)

	for _, p := range all {
		j := p.job
		k := j.GetAccountId() + "/" + j.GetAsset()
		if p.key != k {
			t.Fatalf("job for %s keyed %q", k, p.key)
		}
		if p.topic != kafka.LaneTopic(j.GetLane()) {
			t.Fatalf("job for %s on %s, lane %v", k, p.topic, j.GetLane())
		}
		if j.GetOnDemand() || j.GetAttempt() != 0 || strings.Join(j.GetChecks(), ",") != "tls,headers" || len(j.GetJobId()) != 16 {
			t.Fatalf("job %+v: want scheduled, attempt 0, checks tls,headers, a 16-digit id", j)
		}
		if p.topic == kafka.TopicSlow {
			switch k {
			case long:
				if j.GetExpectedDuration().AsDuration() != 5*time.Second {
					t.Errorf("%s: expected duration %v, want 5s", k, j.GetExpectedDuration().AsDuration())
				}
			case many:
				if j.GetExpectedInsights() != 20_000 {
					t.Errorf("%s: expected insights %d, want 20000", k, j.GetExpectedInsights())
				}
			default:
				t.Errorf("%s on the slow lane", k)
			}
		}
	}
	// Stats count a job once its acknowledgement is back, which can be
	// after a consumer has read it.
	deadline := time.Now().Add(5 * time.Second)
	for st := b.svc.Stats(); st.Scheduled < int64(len(assets)) || st.Slow < 2 || st.Fast < int64(len(assets)); st = b.svc.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: want every asset scheduled, 2 slow jobs at least", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTwoSchedulersOnOneDatabase: two schedulers ticking at once over the
// same 1,000 due assets produce one job for each, no more, within the
// assets' interval.
func TestTwoSchedulersOnOneDatabase(t *testing.T) {
	t.Parallel()
	cfg := Config{BufferFactor: 200_000, Tick: 5 * time.Millisecond, ClaimBatch: 7}
	b := setup(t, false, cfg)
	other := b.start(t, cfg)
	b.register(t, makeAssets("acme", "a", 1000, Plans...))
	b.exec(t, `UPDATE assets SET next_scan_at = now()`)

	total := func() int64 { return b.svc.Stats().Scheduled + other.Stats().Scheduled }
	deadline := time.Now().Add(20 * time.Second)
	for total() < 1000 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 1000 assets scheduled", total())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // room for a second job, which must not come
	if n := total(); n != 1000 {
		t.Fatalf("%d jobs for 1000 assets", n)
	}
	one, two := b.svc.Stats().Scheduled, other.Stats().Scheduled
	if one == 0 || two == 0 {
		t.Logf("one scheduler did all the work (%d, %d): the test proves less than it should", one, two)
	}
	ps := b.jobs(t, 10*time.Second, atLeast(1000))
	for k, jobs := range byAsset(ps) {
		if len(jobs) != 1 {
			t.Errorf("%s: %d jobs", k, len(jobs))
		}
	}
	if len(ps) != 1000 {
		t.Errorf("%d jobs on Kafka, want 1000", len(ps))
	}
}

// TestOnDemandJumpsTheQueue: on-demand requests go out in the next tick
// ahead of a large due backlog, on_demand=true, with a kind only that
// kind's check; a request for many assets is served a page a tick.
func TestOnDemandJumpsTheQueue(t *testing.T) {
	t.Parallel()
	b := setup(t, true, Config{OnDemandPerTick: 200})
	b.register(t, makeAssets("big", "b", 500))
	b.exec(t, `UPDATE assets SET next_scan_at = $1`, t0.Add(-time.Hour)) // 500 due
	b.register(t, []Asset{
		{AccountID: "cust", Asset: "a.example", Plan: PlanPro, Checks: []string{"headers", "tls"}},
		{AccountID: "cust", Asset: "b.example", Plan: PlanPro, Checks: []string{"headers"}},
	})
	b.exec(t, `UPDATE assets SET next_scan_at = $1 WHERE account_id = 'cust'`, t0.Add(24*time.Hour))
	if err := b.svc.recomputeRate(b.ctx); err != nil {
		t.Fatal(err)
	}

	var acc accepted
	if code := b.post(t, "/v1/scans", []byte(`{"account_id":"cust","asset":"a.example"}`), &acc); code != 202 || acc.Assets != 1 {
		t.Fatalf("scan one asset: %d %+v", code, acc)
	}
	acc = accepted{}
	if code := b.post(t, "/v1/scans", []byte(`{"account_id":"cust","kind":"tls.expiry"}`), &acc); code != 202 || acc.Assets != 1 || strings.Join(acc.Checks, ",") != "tls" {
		t.Fatalf("scan a kind: %d %+v, want 1 asset (the one with tls), checks [tls]", code, acc)
	}

	b.clock.Advance(time.Second)
	res := b.tick(t)
	if res.onDemand != 2 || res.scheduled != 1 { // rate max(1, …) × 1.5: one token after a second
		t.Fatalf("tick: %+v, want 2 on demand and 1 scheduled", res)
	}
	if due := b.count(t, `SELECT count(*) FROM assets WHERE next_scan_at <= $1`, b.clock.Now()); due != 499 {
		t.Fatalf("%d due after the tick, want 499 (the backlog waits)", due)
	}
	ps := b.jobs(t, 10*time.Second, atLeast(3))
	var full, kind *longhaulv1.ScanJob
	for _, p := range ps {
		if p.job.GetAccountId() != "cust" {
			if p.job.GetOnDemand() {
				t.Errorf("scheduled job %+v marked on demand", p.job)
			}
			continue
		}
		if !p.job.GetOnDemand() {
			t.Errorf("on-demand job %+v not marked", p.job)
		}
		if p.job.GetKind() == "" {
			full = p.job
		} else {
			kind = p.job
		}
	}
	if full == nil || full.GetAsset() != "a.example" || strings.Join(full.GetChecks(), ",") != "headers,tls" {
		t.Errorf("job for the asset: %+v, want a.example with all its checks", full)
	}
	if kind == nil || kind.GetAsset() != "a.example" || kind.GetKind() != "tls.expiry" || strings.Join(kind.GetChecks(), ",") != "tls" ||
		!strings.HasPrefix(kind.GetJobId(), "k") {
		t.Errorf("job for the kind: %+v, want a.example, kind tls.expiry, checks [tls], id k…", kind)
	}
	if n := b.count(t, `SELECT count(*) FROM scan_requests WHERE done_at IS NULL`); n != 0 {
		t.Errorf("%d requests pending after the tick", n)
	}

	// 500 assets on demand: 200, 200, 100 over three ticks, regardless of
	// the bucket (which gives one scheduled job a second).
	if code := b.post(t, "/v1/scans", []byte(`{"account_id":"big"}`), &acc); code != 202 || acc.Assets != 500 {
		t.Fatalf("scan an account: %d %+v", code, acc)
	}
	for i, want := range []int{200, 200, 100, 0} {
		b.clock.Advance(time.Second)
		if res := b.tick(t); res.onDemand != want {
			t.Fatalf("tick %d: %+v, want %d on demand", i, res, want)
		}
	}
	ps = b.jobs(t, 10*time.Second, atLeast(3+500+4))
	onDemand := map[string]int{}
	for _, p := range ps {
		if p.job.GetAccountId() == "big" && p.job.GetOnDemand() {
			onDemand[p.job.GetAsset()]++
		}
	}
	if len(onDemand) != 500 {
		t.Errorf("%d distinct assets of big scanned on demand, want 500", len(onDemand))
	}
	for a, n := range onDemand {
		if n != 1 {
			t.Errorf("%s: %d on-demand jobs", a, n)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM scan_requests WHERE done_at IS NULL OR job_count <> asset_count`); n != 0 {
		t.Errorf("%d requests pending or short of jobs", n)
	}
}

// TestKafkaDown: while Kafka refuses produce requests, ticks fail within
// ProduceTimeout and the assets (and on-demand requests) stay due; once it
// is back, the next tick schedules them.
func TestKafkaDown(t *testing.T) {
	t.Parallel()
	b := setup(t, true, Config{BufferFactor: 100, Burst: 100, ProduceTimeout: time.Second})
	var down atomic.Bool
	b.kafka.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if !down.Load() {
			return nil, nil, false
		}
		b.kafka.KeepControl()
		return nil, errors.New("broker down"), true // closes the connection
	})
	b.register(t, makeAssets("acme", "a", 20))
	b.exec(t, `UPDATE assets SET next_scan_at = $1`, t0.Add(-time.Minute))
	if err := b.svc.recomputeRate(b.ctx); err != nil {
		t.Fatal(err)
	}
	if code := b.post(t, "/v1/scans", []byte(`{"account_id":"acme","asset":"a-0003.example"}`), nil); code != 202 {
		t.Fatalf("scan request: %d", code)
	}

	down.Store(true)
	b.clock.Advance(time.Second)
	start := time.Now()
	if _, err := b.svc.tick(b.ctx); err == nil {
		t.Fatal("tick succeeded with Kafka down")
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("the failed tick took %v, want about ProduceTimeout (1s)", took)
	}
	if due := b.count(t, `SELECT count(*) FROM assets WHERE next_scan_at <= $1 AND last_job_id IS NULL`, b.clock.Now()); due != 20 {
		t.Errorf("%d assets still due after the failed tick, want 20", due)
	}
	if n := b.count(t, `SELECT count(*) FROM scan_requests WHERE done_at IS NULL`); n != 1 {
		t.Errorf("%d requests pending after the failed tick, want 1", n)
	}
	if st := b.svc.Stats(); st.ProduceErrors == 0 || st.Scheduled+st.OnDemand != 0 {
		t.Errorf("stats %+v: want a produce error and no jobs", st)
	}

	down.Store(false)
	b.clock.Advance(time.Second)
	if res := b.tick(t); res.scheduled != 20 || res.onDemand != 1 {
		t.Fatalf("tick after Kafka came back: %+v, want 20 scheduled and 1 on demand", res)
	}
	if due := b.count(t, `SELECT count(*) FROM assets WHERE next_scan_at <= $1`, b.clock.Now()); due != 0 {
		t.Errorf("%d assets due after Kafka came back", due)
	}
	ps := b.jobs(t, 10*time.Second, func(ps []produced) bool { return len(byAsset(ps)) == 20 })
	onDemand := 0
	for _, p := range ps {
		if p.job.GetOnDemand() {
			onDemand++
		}
	}
	if onDemand == 0 {
		t.Error("the on-demand job did not go out")
	}
}
