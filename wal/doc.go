// Package wal is the edge's durable write-ahead buffer: insights a checker
// pushed are appended here, fsynced before the push is acknowledged, read in
// order by the shipper, and truncated once the primary has applied them. It
// is built on Pebble (github.com/cockroachdb/pebble/v2).
//
// # Guarantees
//
//   - Durable acknowledgement. Append returns sequence numbers only after the
//     records are fsynced. After a crash, Open finds every acknowledged
//     record, intact.
//   - All or nothing. The records of one Append are one Pebble batch: after a
//     crash they are all there or none is. An Append that failed wrote
//     nothing that a reader can see; if it failed in its fsync, or the
//     process died before it returned, the group may reappear after a restart
//     (at-least-once: the primary's ledger makes that harmless).
//   - Order. Sequence numbers start at 1 and are contiguous and strictly
//     increasing, across restarts too: the truncation point is persisted, so
//     a log emptied by Truncate does not hand out a sequence again. A group's
//     records get consecutive numbers in the order of its payloads.
//   - No holes for readers. Read returns only fsynced records (never one a
//     crash could take back), in sequence order, without gaps: a gap or a
//     record failing its checksum is reported as ErrCorrupt.
//   - Quota. The live (not yet truncated) records never count more than
//     Options.QuotaBytes; an Append that does not fit fails with ErrFull and
//     writes nothing. Truncate frees quota; nothing acknowledged is dropped
//     to make room.
//   - Fail stop. Once a write or an fsync fails, Pebble's WAL is in an
//     unknown state, so every later Append and Truncate fails with an error
//     wrapping ErrFailed and the cause. Read still serves what was
//     acknowledged; Close and Open again to recover.
//
// # Group commit
//
// Appends queue their group. One committer at a time takes all the groups
// waiting (up to Options.MaxGroupBytes), assigns their sequence numbers,
// writes them in one Pebble batch, commits it with Sync and waits for the
// fsync, then publishes the new last sequence to readers and answers every
// Append of the batch. Appends arriving during that fsync form the next
// batch, so under load one fsync serves many Appends (Stats.Syncs against
// Stats.Appends shows how many). The committer is the Append that found no
// commit running, on its own goroutine, so an uncontended Append wakes no
// other goroutine; what queues meanwhile goes to a committer goroutine that
// runs until the queue is empty.
//
// One commit is in flight at a time on purpose. Pebble panics, leaving its
// commit pipeline locked (DB.Close would then block), when a batch is written
// after its WAL writer failed; waiting for each fsync before the next write
// means the log sees the failure, and stops cleanly, before that can happen.
// It also keeps sequence order, WAL order and acknowledgement order the
// same, so a durable record implies every earlier record is durable.
//
// The alternative, every Append committing its own batch with Sync and
// letting Pebble's commit pipeline share the fsyncs and overlap the next
// writes with the running one (BenchmarkPebbleGroupingBaseline), measured
// from the same to about 1.6 times this throughput with 16 and 64
// concurrent Appends on a noisy shared 2-core VM, and the same with one
// (bound by the fsync), but a write error can then wedge Pebble. Both are
// well above the 100,000 records/s the edge needs with concurrent Appends;
// see BenchmarkAppend.
//
// Some failures Pebble treats as fatal wherever they happen, and so does
// this package: failing to create the next WAL file when the memtable
// rotates, or to sync the MANIFEST, ends the process (Pebble's Fatalf
// panics here instead of exiting). A restart recovers every acknowledged
// record. A panic inside a commit that Go can recover from makes the log
// fail as above, and Close then returns an error without closing Pebble,
// whose locks it cannot release: the process must restart to reopen the log.
//
// # Concurrency contract
//
// All methods of Log are safe for concurrent use. Append blocks for one
// group commit at most once its group is taken; if ctx ends before that,
// Append returns ctx.Err() and writes nothing. Append does not retain the
// payload slices after it returns; Read returns copies the caller owns. Read
// never waits for an fsync; Wait blocks until a record after a given
// sequence is readable. Close may be called at any time
// and more than once: Appends not yet taken fail with ErrClosed, the group in
// flight completes.
//
// # On-disk format
//
// Pebble holds two kinds of keys; the meta key sorts before every record key,
// and record keys sort by sequence because it is big-endian:
//
//	meta key:   "m"
//	meta value: +---------+--------------+--------------+--------+
//	            | ver = 1 | truncatedSeq | truncatedEnd | crc32c |
//	            | 1 byte  | 8, BE        | 8, BE        | 4, BE  |
//	            +---------+--------------+--------------+--------+
//	            crc32c (Castagnoli) covers the 17 bytes before it.
//
//	record key:   +-----+----------+
//	              | 'r' | seq      |
//	              | 1   | 8, BE    |
//	              +-----+----------+
//	record value: +---------+------------+--------+------------+--------+---------+
//	              | ver = 1 | appendedAt | end    | payloadLen | crc32c | payload |
//	              | 1 byte  | 8, BE      | 8, BE  | 4, BE      | 4, BE  | n bytes |
//	              +---------+------------+--------+------------+--------+---------+
//
// appendedAt is Unix nanoseconds. end is the log's cumulative accounted size
// (the sum of every record's key and value length, since the log was
// created) through this record, so the live bytes are the newest record's end
// minus truncatedEnd: Open finds them without scanning the log, and Truncate
// by reading one record. The record's crc32c
// covers the key, the 21 header bytes before it and the payload, so a value
// under the wrong key fails too.
//
// Truncate writes, in one batch, a range deletion of the truncated record
// keys and the new meta value: every record up to truncatedSeq is gone. The
// next sequence after Open is one past the newest record, or truncatedSeq+1
// when none is left. Open checks that the oldest record follows the meta
// value (sequence and end offset) and fails with ErrCorrupt otherwise.
package wal
