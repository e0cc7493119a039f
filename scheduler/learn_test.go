package scheduler

import (
	"testing"
	"time"
)

// TestLearnCost: completions in the scans table become the asset's
// expected cost: the longest check and the sum of the insights of its
// latest job. A job's checks completing over several passes add up, a job
// seen again changes nothing, a completion that becomes visible late does
// not overwrite the cost of a later one, and a one-check on-demand job
// ('k…') teaches nothing.
func TestLearnCost(t *testing.T) {
	t.Parallel()
	b := setup(t, true, Config{})
	b.register(t, []Asset{{AccountID: "acme", Asset: "x", Plan: PlanPro, Checks: []string{"tls", "headers"}}})

	// complete records a scan's completion as the primary does, completed
	// `ago` before the database's now.
	complete := func(scanID string, took time.Duration, insights int64, ago time.Duration) {
		t.Helper()
		b.exec(t, `INSERT INTO scans (scan_id, account_id, asset, checker, insight_count, started_at, finished_at, completed_at)
			VALUES ($1, 'acme', 'x', split_part($1, '/', 2), $2,
			        now() - $4::int8 * interval '1 microsecond' - $3::int8 * interval '1 microsecond',
			        now() - $4::int8 * interval '1 microsecond',
			        now() - $4::int8 * interval '1 microsecond')`,
			scanID, insights, took.Microseconds(), ago.Microseconds())
	}
	want := func(step string, dur time.Duration, insights int64, job string) {
		t.Helper()
		if _, err := b.svc.learn(b.ctx); err != nil {
			t.Fatal(err)
		}
		var ms, n int64
		var costJob string
		if err := b.pool.QueryRow(b.ctx, `SELECT (extract(epoch FROM last_scan_duration) * 1000)::int8, last_insight_count, cost_job_id
			FROM assets WHERE asset = 'x'`).Scan(&ms, &n, &costJob); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if time.Duration(ms)*time.Millisecond != dur || n != insights || costJob != job {
			t.Fatalf("%s: cost %v, %d insights from %s; want %v, %d from %s", step, time.Duration(ms)*time.Millisecond, n, costJob, dur, insights, job)
		}
	}

	complete("job1/tls", 3*time.Second, 100, 10*time.Second)
	want("first check of job1", 3*time.Second, 100, "job1")
	complete("job1/headers", time.Second, 50, 5*time.Second)
	want("second check of job1, next pass", 3*time.Second, 150, "job1")
	want("nothing new", 3*time.Second, 150, "job1")

	complete("job2/tls", 500*time.Millisecond, 7, 2*time.Second)
	want("job2 replaces job1", 500*time.Millisecond, 7, "job2")

	complete("job0/tls", time.Minute, 99_999, 30*time.Second) // completed before job2, visible after it
	want("an earlier completion seen late", 500*time.Millisecond, 7, "job2")

	complete("kaaaaaaaaaaaaaaa/tls", time.Hour, 1, 0)
	want("a one-check on-demand job", 500*time.Millisecond, 7, "job2")
}
