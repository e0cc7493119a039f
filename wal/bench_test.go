package wal

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

const benchRecords, benchRecordSize = 50, 300

func benchGroup() [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	group := make([][]byte, benchRecords)
	for i := range group {
		group[i] = make([]byte, benchRecordSize)
		for j := range group[i] {
			group[i][j] = byte(rng.Uint32())
		}
	}
	return group
}

// runParallel calls op b.N times from the given number of goroutines.
func runParallel(b *testing.B, goroutines int, op func() error) {
	b.SetBytes(benchRecords * benchRecordSize)
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N*benchRecords)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkAppend measures durable Appends of 50 records of 300 bytes on a
// real directory, from 1, 16 and 64 goroutines: records/s, and how many
// fsyncs each Append cost (group commit shares them).
func BenchmarkAppend(b *testing.B) {
	group := benchGroup()
	for _, goroutines := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			l := openLog(b, b.TempDir(), Options{FS: vfs.Default, QuotaBytes: 1 << 40})
			ctx := context.Background()
			runParallel(b, goroutines, func() error {
				_, _, err := l.Append(ctx, group)
				return err
			})
			st := l.Stats()
			b.ReportMetric(float64(st.Syncs)/float64(st.Appends), "fsyncs/append")
		})
	}
}

// BenchmarkPebbleGroupingBaseline is the design Log does not use, kept to
// compare against: every Append writes its own batch (sequence assignment and
// WAL write under one mutex, so WAL order is sequence order) and waits for
// its own Sync, letting Pebble's commit pipeline share fsyncs and overlap
// the next writes with the running fsync. It is faster under concurrency;
// Log does not do it because Pebble panics, leaving its commit pipeline
// locked, when a batch is written after its WAL writer failed, and with
// several commits in flight one can be. See the package documentation.
func BenchmarkPebbleGroupingBaseline(b *testing.B) {
	group := benchGroup()
	for _, goroutines := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			db, err := pebble.Open(b.TempDir(), &pebble.Options{
				FormatMajorVersion: pebble.FormatNewest,
				MemTableSize:       DefaultMemTableSize,
				Logger:             pebbleLogger{testLogger},
			})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = db.Close() }()
			var mu sync.Mutex
			var seq, end uint64
			runParallel(b, goroutines, func() error {
				at := time.Now().UnixNano()
				mu.Lock()
				batch := db.NewBatchWithSize(benchRecords * int(recordSize(benchRecordSize)+16))
				for _, p := range group {
					seq++
					op := batch.SetDeferred(recordKeyLen, recordHeaderLen+len(p))
					putRecordKey(op.Key, seq)
					end += uint64(recordSize(len(p)))
					encodeRecordValue(op.Value, op.Key, at, end, p)
					_ = op.Finish()
				}
				err := db.ApplyNoSyncWait(batch, pebble.Sync)
				mu.Unlock()
				if err == nil {
					err = batch.SyncWait()
				}
				_ = batch.Close()
				return err
			})
		})
	}
}
