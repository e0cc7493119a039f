// Package writepath is the write-path benchmark (`longhaul bench
// writepath`): the same workload written from a region RTT away from the
// PostgreSQL primary by three designs, side by side in one run.
//
//	per_row   the seed's original design: a scan's insights in one call at
//	          the end of the scan, one INSERT … ON CONFLICT per insight (a
//	          round trip each, in a transaction), from a pool of
//	          Config.Pool connections across the link. Measured on a
//	          sample (Config.Sample rows from the pool, concurrently) and
//	          extrapolated, unless the workload is no larger than the
//	          sample.
//	direct    the seed's fix: a scan's insights in one call at the end of
//	          the scan, one UNNEST upsert below the COPY threshold, COPY
//	          into a staging table and one merge from it
//	          (primary.WriteDirect), from the same pool across the link.
//	longhaul  an edge beside the checkers (no link), which acknowledges
//	          pushes once they are in its WAL and ships them across the link
//	          to the primary beside PostgreSQL, whose pool has the same size.
//	          A checker pushes each scan with pushclient.Client.Push at
//	          its end, or, a big scan that finds its insights over time,
//	          writes them as it finds them through a pushclient.Writer.
//
// The strategies run one after another, each into a schema of its own,
// fresh and migrated, on the same server (a throwaway cluster unless
// Config.DatabaseURL names one), with a checkpoint in between. Each crosses
// a toxiproxy link of its own (internal/wan) with the RTT, half each way:
// per_row's and direct's pool connections, longhaul's edge→primary stream.
//
// # Workload
//
// Config.Scans small scans of Config.PerScan insights and Config.BigScans
// big scans of Config.Insights, the big ones spread evenly among the small
// ones (the first scan is a big one), every insight a key of its own, made
// by primary.Synthetic. Config.Concurrency checkers take the scans in that
// order, each the next one as soon as the last write call of its previous
// one returns. Every strategy makes the same Config.Rows() rows visible.
// Default is the seed's situation (one scan of 500,000), Mixed the mixed
// workload (2,000 scans of 50 and one of 500,000 from 32 checkers).
//
// A checker scans before it writes (a sleep: the scan's work is not
// modelled, only its time). A small scan scans for Config.ScanTime on
// average (each its own time, from 0.5 to 1.5 times it, the same in every
// strategy: real scans vary, and checkers that start together must not
// stay in step), then has all its insights and makes its one write call. A big scan finds its
// insights evenly over Config.BigScanTime, in steps (one every 100ms, 100
// at most, the last at the end of the scan): per_row and direct gather
// them and make their one write call at the end, as the seed's checkers
// did (a pooled connection held across the link for a whole scan would
// starve the other checkers); longhaul's checker writes each step's
// insights as it finds them (pushclient.Writer.Write, which returns at
// once unless its window of segments under way is full) and closes the
// Writer at the end (pushclient.Writer.Close: the last segments'
// acknowledgements). Time blocked in a write delays the rest of the scan,
// as it would a checker's loop. With both times 0 (the default) the
// checkers do nothing but write, so the figures are the write path's
// alone, and blocked is about checkers × time for every strategy.
//
// # Figures
//
//	blocked_seconds   the sum over scans of the time their checker spent in
//	                  write calls, waiting for a pool connection included,
//	                  scanning not included: per_row's and direct's one call;
//	                  longhaul's Push, or its Writer's Write calls and Close
//	checker_seconds   the sum over scans of their checker's time on them,
//	                  from taking the scan to its last write call's return:
//	                  scanning and blocked
//	blocked_share     blocked_seconds ÷ checker_seconds (the seed's checkers
//	                  spent 20-90 % of their time in one API call)
//	visible_seconds   from the start until every row is visible in
//	                  PostgreSQL: for longhaul, when the edge's ledger row,
//	                  polled beside the database once the last push
//	                  returned, first said the primary had applied the
//	                  edge's last record (the time the query was sent; the
//	                  ledger advances in the transaction that commits the
//	                  rows); for direct and per_row, the end of the last
//	                  write call, which committed
//	write_seconds     from the start until the last write call returned
//	                  (scanning included)
//	scans_per_second  scans completed ÷ write_seconds
//	push_p99_seconds  the 99th percentile (nearest rank) of one scan's
//	                  blocked time: Push to the edge, or the Writer's Writes
//	                  and Close, for longhaul; acquiring a pooled connection
//	                  and WriteDirect for direct; acquiring one and the
//	                  per-row transaction for per_row
//
// Ratios against direct are such that more than 1 is better: scans/s ÷
// direct's, direct's blocked ÷ this one's, direct's visible ÷ this one's.
//
// An extrapolated per_row replays the workload on a model (simulate): the
// checkers take the scans in order, each scans for its scan time exactly
// (ScanTime or BigScanTime: given, not extrapolated), then its call waits
// for the first free connection of the pool, first come first served, and
// holds it for (insights + 2) statements (BEGIN, one per insight, COMMIT),
// each taking the mean statement time the sample measured with every
// connection of the pool busy (no scan time in the sample: its rows are
// written back to back). Only the write's time is extrapolated; blocked
// runs from the request for a connection to the call's end. Its figures
// are marked "extrapolated": true, and its rows_written is the sample's.
//
// # Goals
//
// On the mixed workload at 80 ms, longhaul is to complete at least 10× the
// scans/s of direct with the same pool size, block checkers at least 50×
// less, and make everything visible no later than direct (Result.Goals).
//
// # Cleanup
//
// Run removes what it made before it returns, also when its context ends:
// the schemas, the links, the edge and its WAL directory, the primary, the
// pools, and the throwaway cluster. Nothing of it runs on afterwards but
// what toxiproxy leaves of connections closed with data in flight (see
// internal/wan: blocked goroutines, which wan.LeakOptions ignore).
package writepath
