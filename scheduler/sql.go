package scheduler

// The scheduler's SQL, in one place. Times of the schedule are parameters
// (the scheduler's clock, Config.Now); audit times (created_at, done_at)
// are the database's.

// planInterval is the interval of the plan in column col, from the
// microseconds of the free, pro, business and enterprise plans in $7…$10.
func planInterval(col string) string {
	return `(CASE ` + col + ` WHEN 'free' THEN $7::int8 WHEN 'pro' THEN $8::int8 WHEN 'business' THEN $9::int8 ELSE $10::int8 END * interval '1 microsecond')`
}

// sqlRegister upserts assets ($1…$5: account, asset, plan, checks joined
// with ',', first scan) at $6, returning per row whether it was inserted.
// A row whose plan and checks are unchanged and whose next scan is within
// the plan's interval is left alone (and not returned).
var sqlRegister = `INSERT INTO assets AS a (account_id, asset, plan, checks, next_scan_at, created_at, updated_at)
SELECT u.account_id, u.asset, u.plan, string_to_array(u.checks, ','), u.first_at, $6, $6
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) AS u(account_id, asset, plan, checks, first_at)
ON CONFLICT (account_id, asset) DO UPDATE SET
    plan         = EXCLUDED.plan,
    checks       = EXCLUDED.checks,
    next_scan_at = LEAST(a.next_scan_at, $6 + ` + planInterval("EXCLUDED.plan") + `),
    updated_at   = $6
WHERE a.plan <> EXCLUDED.plan OR a.checks <> EXCLUDED.checks
   OR a.next_scan_at > $6 + ` + planInterval("EXCLUDED.plan") + `
RETURNING (xmax = 0)`

// sqlClaimDue locks up to $2 assets due at $1, earliest first, skipping
// those another scheduler holds.
const sqlClaimDue = `SELECT account_id, asset, plan, checks,
       (extract(epoch FROM last_scan_duration) * 1000)::int8, last_insight_count
FROM assets
WHERE next_scan_at <= $1
ORDER BY next_scan_at
LIMIT $2
FOR UPDATE SKIP LOCKED`

// sqlScheduled moves the claimed assets on: their job ($3) went out at $5,
// the next is due at $4.
const sqlScheduled = `UPDATE assets AS a SET
    next_scan_at = u.next_at, last_scheduled_at = $5, last_job_id = u.job_id
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(account_id, asset, job_id, next_at)
WHERE a.account_id = u.account_id AND a.asset = u.asset`

// sqlRecordRequest records an on-demand request for account $1, asset $2
// (NULL: all), check $3 (NULL: all) of kind $4, if it matches any asset.
// It returns how many assets the account (and asset) has, how many of them
// have the check, and the request's id (NULL when nothing matched).
const sqlRecordRequest = `WITH m AS (
    SELECT count(*) AS known,
           count(*) FILTER (WHERE $3::text IS NULL OR $3::text = ANY (checks)) AS matching
    FROM assets
    WHERE account_id = $1 AND ($2::text IS NULL OR asset = $2::text)
), ins AS (
    INSERT INTO scan_requests (account_id, asset, kind, check_name, asset_count)
    SELECT $1, $2::text, $4::text, $3::text, m.matching FROM m WHERE m.matching > 0
    RETURNING id
)
SELECT m.known, m.matching, (SELECT id FROM ins) FROM m`

// sqlClaimRequests locks up to $1 pending on-demand requests, oldest first.
const sqlClaimRequests = `SELECT id, account_id, asset, check_name, kind, cursor
FROM scan_requests
WHERE done_at IS NULL
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED`

// sqlRequestAssets pages through the assets of a request: account $1,
// asset $2 (NULL: all), check $3 (NULL: all), after asset $4, $5 at most.
const sqlRequestAssets = `SELECT account_id, asset, plan, checks,
       (extract(epoch FROM last_scan_duration) * 1000)::int8, last_insight_count
FROM assets
WHERE account_id = $1 AND ($2::text IS NULL OR asset = $2::text)
  AND ($3::text IS NULL OR $3::text = ANY (checks))
  AND ($4::text IS NULL OR asset > $4::text)
ORDER BY asset
LIMIT $5`

// sqlRequestsServed records the progress of requests: cursor, jobs added,
// done.
const sqlRequestsServed = `UPDATE scan_requests AS r SET
    cursor    = coalesce(u.cursor, r.cursor),
    job_count = r.job_count + u.jobs,
    done_at   = CASE WHEN u.done THEN now() END
FROM unnest($1::int8[], $2::text[], $3::int4[], $4::bool[]) AS u(id, cursor, jobs, done)
WHERE r.id = u.id`

// sqlPlanCounts counts the assets of each plan, for the rate.
const sqlPlanCounts = `SELECT plan, count(*) FROM assets GROUP BY plan`

// sqlBacklog counts the assets due at $1 and the pending requests.
const sqlBacklog = `SELECT (SELECT count(*) FROM assets WHERE next_scan_at <= $1),
       (SELECT count(*) FROM scan_requests WHERE done_at IS NULL)`

// sqlLearnStart is where the first learning pass starts: $1 microseconds
// before the database's now (completed_at is the database's clock).
const sqlLearnStart = `SELECT now() - $1::int8 * interval '1 microsecond'`

// sqlLearn folds the scans completed after $1 into their assets' expected
// cost. Per job (the scan id's part before '/'): the longest check and the
// sum of the insights. Each asset takes its latest job's (by completion);
// a job seen again (its checks completing over several passes) only raises
// the cost, and a completion that becomes visible late does not overwrite
// the cost of a later one. Jobs whose
// id starts with 'k' ran one check of an on-demand request for one kind:
// they say nothing of the cost of a full scan. It returns the assets
// updated and the latest completion seen (NULL if none).
const sqlLearn = `WITH done AS (
    SELECT account_id, asset, split_part(scan_id, '/', 1) AS job_id,
           max(CASE WHEN finished_at >= started_at THEN finished_at - started_at END) AS duration,
           sum(insight_count)::int8 AS insights,
           max(completed_at) AS completed_at
    FROM scans
    WHERE completed_at > $1 AND account_id IS NOT NULL AND asset IS NOT NULL
      AND split_part(scan_id, '/', 1) NOT LIKE 'k%'
    GROUP BY 1, 2, 3
), latest AS (
    SELECT DISTINCT ON (account_id, asset) *
    FROM done
    ORDER BY account_id, asset, completed_at DESC, job_id DESC
), learned AS (
    UPDATE assets AS a SET
        last_scan_duration = CASE WHEN a.cost_job_id = l.job_id
            THEN GREATEST(a.last_scan_duration, l.duration)
            ELSE coalesce(l.duration, a.last_scan_duration) END,
        last_insight_count = CASE WHEN a.cost_job_id = l.job_id
            THEN GREATEST(a.last_insight_count, l.insights)
            ELSE coalesce(l.insights, a.last_insight_count) END,
        cost_job_id      = l.job_id,
        cost_observed_at = GREATEST(a.cost_observed_at, l.completed_at)
    FROM latest AS l
    WHERE a.account_id = l.account_id AND a.asset = l.asset
      AND (a.cost_job_id = l.job_id OR a.cost_observed_at IS NULL OR l.completed_at >= a.cost_observed_at)
    RETURNING 1
)
SELECT (SELECT count(*) FROM learned), (SELECT max(completed_at) FROM done)`
