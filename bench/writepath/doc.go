// Package writepath is the write-path benchmark (`longhaul bench
// writepath`): the same workload written from a region RTT away from the
// PostgreSQL primary by three designs, side by side in one run.
//
//	per_row   the seed's original design: a scan's insights in one call, one
//	          INSERT … ON CONFLICT per insight (a round trip each, in a
//	          transaction), from a pool of Config.Pool connections across
//	          the link. Measured on a sample (Config.Sample rows from the
//	          pool, concurrently) and extrapolated, unless the workload is no
//	          larger than the sample.
//	direct    the seed's fix: a scan's insights in one call, one UNNEST
//	          upsert below the COPY threshold, COPY into a staging table and
//	          one merge from it (primary.WriteDirect), from the same pool
//	          across the link.
//	longhaul  an edge beside the checkers (no link), which acknowledges
//	          pushes once they are in its WAL and ships them across the link
//	          to the primary beside PostgreSQL, whose pool has the same size.
//	          A checker pushes each scan with pushclient.Client.Push.
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
// order, each the next one as soon as its write call returns: the checkers
// do nothing but write, so the figures are the write path's alone. Every
// strategy makes the same Config.Rows() rows visible. Default is the seed's
// situation (one scan of 500,000), Mixed the mixed workload (2,000 scans of
// 50 and one of 500,000 from 32 checkers).
//
// # Figures
//
//	blocked_seconds   the sum over checkers of the time spent in write calls,
//	                  waiting for a pool connection included
//	visible_seconds   from the start until every row is visible in
//	                  PostgreSQL: for longhaul, when count(*) on the insights
//	                  table, polled beside the database once the last push
//	                  returned, first saw them all (the time the query was
//	                  sent); for direct and per_row, the end of the last
//	                  write call, which committed
//	write_seconds     from the start until the last write call returned
//	scans_per_second  scans completed ÷ write_seconds
//	push_p99_seconds  the 99th percentile (nearest rank) of one scan's write
//	                  call: Push to the edge for longhaul; acquiring a pooled
//	                  connection and WriteDirect for direct; acquiring one
//	                  and the per-row transaction for per_row
//
// Ratios against direct are such that more than 1 is better: scans/s ÷
// direct's, direct's blocked ÷ this one's, direct's visible ÷ this one's.
//
// An extrapolated per_row replays the workload on a model (simulate): the
// checkers take the scans in order, each call waits for the first free
// connection of the pool, first come first served, and holds it for
// (insights + 2) statements (BEGIN, one per insight, COMMIT), each taking
// the mean statement time the sample measured with every connection of the
// pool busy. Its figures are marked "extrapolated": true, and its
// rows_written is the sample's.
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
