// Package scheduler decides when each registered asset is scanned and
// produces the scan jobs to Kafka (`longhaul scheduler`).
//
//	POST /v1/assets ──► assets (PostgreSQL) ──tick──► scans.fast / scans.slow
//	POST /v1/scans  ──► scan_requests ───────tick──►   (ScanJob, key account/asset)
//	                      ▲
//	   scans (completions, written by the primary) ── learn: expected cost
//
// # Schedule
//
// Every asset has its own next_scan_at. A new asset's first scan is at a
// random time within its plan's interval (Config.Intervals: free 7 days,
// pro and business 3, enterprise 1 by default), so assets registered
// together are not scanned together; after each job, next_scan_at is one
// interval after the time it was produced. Registering an asset again
// keeps its next scan, no later than one interval of its new plan.
//
// # Rate
//
// Scheduled jobs leave through a token bucket (empty at start) whose rate
// is max(1/s, Σ over plans of assets ÷ interval) × Config.BufferFactor,
// computed again every Config.RateEvery and after registrations. The limit
// is per scheduler process: n schedulers on one database release up to n
// times the rate together.
//
// # Claiming
//
// Every Config.Tick, one transaction at a time (up to Config.ClaimBatch
// assets): SELECT the due assets … ORDER BY next_scan_at LIMIT n FOR UPDATE
// SKIP LOCKED; produce their jobs and wait for Kafka's acknowledgement
// (kgo ProduceSync, at most Config.ProduceTimeout); move next_scan_at on;
// commit. If producing fails, the transaction rolls back and the assets
// stay due. Delivery is at least once: if the commit fails after Kafka
// acknowledged, the jobs go out again. Several schedulers on one database
// never claim the same asset at once (SKIP LOCKED), and an asset whose
// next_scan_at moved on is no longer due (PostgreSQL re-checks the WHERE
// clause of a row locked after a concurrent update), so no asset is
// scheduled twice in one interval as long as the schedulers' clocks agree.
//
// # On demand
//
// POST /v1/scans records a request (every asset of an account, or one, and
// with a kind "<check>.<rest>" such as "tls.expiry" only the check producing
// it, for the assets that have that check; the job carries the kind). Each
// tick serves pending requests first, oldest first, before the scheduled
// jobs. Their jobs (on_demand=true) do not wait for the token bucket and do
// not use its tokens: they are what a person asked for, now. They are
// bounded instead by Config.OnDemandPerTick jobs per tick; a request for
// more assets is served a page at a time over several ticks. On-demand jobs
// do not move the asset's schedule.
//
// # Lanes and cost
//
// A job goes to the slow lane when its asset's last scan took at least
// Config.SlowDuration or found at least Config.SlowInsights insights, to the
// fast lane otherwise, unknown cost included (the fast lane hands jobs that
// overrun its budget to the slow lane itself). Every Config.LearnEvery the
// scheduler folds the completions in the primary's scans table into the
// assets: per job (the scan id's part before '/'), the longest check and the
// sum of the insights. The watermark is in memory, on the database's clock:
// the first pass looks back Config.LearnLookback, each pass looks again a
// minute before the latest completion it saw, and folding a job twice
// changes nothing. The latest completion wins: one that becomes visible
// late (its transaction committed after a later one's) does not overwrite
// the cost learned from the later one.
//
// # Jobs
//
// A job id is 16 random lower-case hex digits; a job running one check for
// an on-demand request of one kind has 'k' as its first character instead,
// and teaches nothing about the asset's cost. Jobs are keyed by
// "account_id/asset" (kafka.JobKey), so the jobs of an asset share a
// partition.
//
// # Input
//
// Outside input (the two request bodies, import files) is validated before
// anything is written: an *InputError names the item or line and the field.
// Check names are lower-case letters, digits, '-' and '_'. Text fields are
// valid UTF-8 without NUL, at most MaxTextBytes, as a Kafka job requires.
//
// # Schema
//
// The tables assets and scan_requests are in primary/migrate
// (0002_assets.sql); Start migrates the database.
package scheduler
