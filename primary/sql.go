package primary

// The SQL of the applier, in one place.

// insertColumns are the columns both write paths fill, in this order.
const insertColumns = `account_id, asset, kind, subject, severity, details, scan_id, checker, first_seen_at, last_seen_at, details_hash`

// wins is true when the proposed row (EXCLUDED) beats the stored one under
// last-writer-wins. Text compares byte-wise (COLLATE "C") to agree with the
// in-batch collapse in Go, whatever the database's collation.
const wins = `((EXCLUDED.last_seen_at, EXCLUDED.severity COLLATE "C", EXCLUDED.scan_id COLLATE "C", EXCLUDED.checker COLLATE "C", EXCLUDED.details_hash)
      > (i.last_seen_at, i.severity COLLATE "C", i.scan_id COLLATE "C", i.checker COLLATE "C", i.details_hash))`

// onConflict merges a proposed row into a stored one. The winner's fields
// replace the loser's; first_seen_at is the earliest observation whichever
// wins (so the result does not depend on order); a resolved insight reopens
// only when observed again at or after the time it was resolved as of.
const onConflict = `
ON CONFLICT (account_id, asset, kind, subject) DO UPDATE SET
    severity      = CASE WHEN ` + wins + ` THEN EXCLUDED.severity ELSE i.severity END,
    details       = CASE WHEN ` + wins + ` THEN EXCLUDED.details ELSE i.details END,
    scan_id       = CASE WHEN ` + wins + ` THEN EXCLUDED.scan_id ELSE i.scan_id END,
    checker       = CASE WHEN ` + wins + ` THEN EXCLUDED.checker ELSE i.checker END,
    details_hash  = CASE WHEN ` + wins + ` THEN EXCLUDED.details_hash ELSE i.details_hash END,
    resolved_at   = CASE WHEN ` + wins + ` AND EXCLUDED.last_seen_at >= i.resolved_at THEN NULL ELSE i.resolved_at END,
    last_seen_at  = GREATEST(i.last_seen_at, EXCLUDED.last_seen_at),
    first_seen_at = LEAST(i.first_seen_at, EXCLUDED.first_seen_at)
WHERE ` + wins + ` OR EXCLUDED.first_seen_at < i.first_seen_at`

// sqlUnnest writes a batch in one statement from column arrays.
const sqlUnnest = `INSERT INTO insights AS i (` + insertColumns + `)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::text[], $8::text[],
                     $9::timestamptz[], $10::timestamptz[], $11::int8[])` + onConflict

// The staging table of the COPY path: one per connection, created the first
// time the connection needs it, emptied by every commit. Never one table per
// batch, so the catalog does not grow with the number of batches.
const (
	stagingTable     = "insights_staging"
	sqlCreateStaging = `CREATE TEMP TABLE IF NOT EXISTS ` + stagingTable + ` (
    account_id text, asset text, kind text, subject text, severity text, details jsonb,
    scan_id text, checker text, first_seen_at timestamptz, last_seen_at timestamptz, details_hash bigint
) ON COMMIT DELETE ROWS`
	// Large batches fill the staging table past the default 8MB of local
	// buffers; it must be set before the session first touches a
	// temporary table, which creating the staging table is.
	sqlStagingBuffers = `SET temp_buffers = '128MB'`
	sqlMergeStaging   = `INSERT INTO insights AS i (` + insertColumns + `)
SELECT ` + insertColumns + ` FROM pg_temp.` + stagingTable + onConflict
	sqlClearStaging = `DELETE FROM pg_temp.` + stagingTable
)

// sqlCopy copies rows into table (the staging table; the benchmark's plain
// COPY) in the binary format copyReader writes.
func sqlCopy(table string) string {
	return `COPY ` + table + ` (` + insertColumns + `) FROM STDIN (FORMAT binary)`
}

// sqlLedger locks the edge's ledger row (creating it at 0) and returns the
// last sequence applied for it.
const sqlLedger = `INSERT INTO edge_ledger AS l (edge_id, applied_seq) VALUES ($1, 0)
ON CONFLICT (edge_id) DO UPDATE SET edge_id = l.edge_id
RETURNING applied_seq`

// sqlTakeTurn takes a batch's advisory lock (see turn); sqlTakeTurnReadLedger
// also reads the edge's ledger, without locking it.
const (
	sqlTakeTurn           = `SELECT pg_advisory_xact_lock($1)`
	sqlTakeTurnReadLedger = sqlAppliedSeq + ` FROM pg_advisory_xact_lock($2)`
)

// sqlAwaitTurn waits until the transaction of the batch before has ended.
const sqlAwaitTurn = `SELECT pg_advisory_xact_lock_shared($1)`

const sqlAdvanceLedger = `UPDATE edge_ledger SET applied_seq = $2, batches = batches + 1, updated_at = now() WHERE edge_id = $1`

const sqlAppliedSeq = `SELECT coalesce((SELECT applied_seq FROM edge_ledger WHERE edge_id = $1), 0)`

const sqlDeadLetter = `INSERT INTO dead_letters (edge_id, first_seq, last_seq, insight_key, sqlstate, reason, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7)`

// sqlTallies adds a batch's per-scan counts to the scans' progress.
const sqlTallies = `INSERT INTO scans AS s (scan_id, applied_count, min_observed_at)
SELECT * FROM unnest($1::text[], $2::int8[], $3::timestamptz[])
ON CONFLICT (scan_id) DO UPDATE SET
    applied_count   = s.applied_count + EXCLUDED.applied_count,
    min_observed_at = LEAST(s.min_observed_at, EXCLUDED.min_observed_at)`

// sqlCompletions records scan completions. A repeated completion keeps the
// first one's time of arrival.
const sqlCompletions = `INSERT INTO scans AS s (scan_id, account_id, asset, checker, insight_count, started_at, finished_at, completed_at)
SELECT u.*, now() FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::timestamptz[], $7::timestamptz[]) AS u
ON CONFLICT (scan_id) DO UPDATE SET
    account_id = EXCLUDED.account_id, asset = EXCLUDED.asset, checker = EXCLUDED.checker,
    insight_count = EXCLUDED.insight_count, started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
    completed_at = coalesce(s.completed_at, EXCLUDED.completed_at)`

// sqlReadyScans finds the scans among $1 whose completion has arrived and
// whose insights have all been applied, and the time they resolve as of.
const sqlReadyScans = `SELECT scan_id, account_id, asset, checker,
       coalesce(started_at, min_observed_at, finished_at, completed_at)
FROM scans
WHERE scan_id = ANY($1::text[]) AND completed_at IS NOT NULL AND resolved_at IS NULL
  AND applied_count >= insight_count
ORDER BY scan_id
FOR UPDATE`

// sqlResolve resolves the insights of an asset and checker that a scan
// did not see and that were last seen before it started. The time an
// insight is resolved as of is the earliest such scan's start, so the
// result does not depend on the order completions arrive in.
const sqlResolve = `UPDATE insights SET resolved_at = $5
WHERE account_id = $1 AND asset = $2 AND checker = $3 AND scan_id <> $4
  AND last_seen_at < $5 AND (resolved_at IS NULL OR resolved_at > $5)`

const sqlScanResolved = `UPDATE scans SET resolved_at = now(), resolved_count = $2 WHERE scan_id = $1`
