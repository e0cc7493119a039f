package wal

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// crashPayload is the deterministic payload of record rec of a group of n
// records, Append number app of writer w: the checker rebuilds it from its
// first 12 bytes, so any record found after a crash can be traced to the
// Append that submitted it.
func crashPayload(w, app, rec, n int) []byte {
	size := 12 + (w*131+app*17+rec*7)%300
	p := make([]byte, size)
	binary.BigEndian.PutUint32(p[0:], uint32(w))
	binary.BigEndian.PutUint32(p[4:], uint32(app))
	binary.BigEndian.PutUint16(p[8:], uint16(rec))
	binary.BigEndian.PutUint16(p[10:], uint16(n))
	for i := 12; i < size; i++ {
		p[i] = byte(w + app*3 + rec*5 + i)
	}
	return p
}

type crashConfig struct {
	noSync   bool
	writers  int
	clones   int
	seed     uint64
	unsynced func(rng *rand.Rand) int // UnsyncedDataPercent of each clone
}

// crashReport is what checking the clones found.
type crashReport struct {
	clones   int
	acked    int // acknowledged records that had to survive, summed over clones
	lost     int // of those, missing or altered
	problems []string
}

func (r *crashReport) problemf(format string, args ...any) {
	if len(r.problems) < 20 {
		r.problems = append(r.problems, fmt.Sprintf(format, args...))
	}
}

// runCrash appends from concurrent writers, and truncates like a shipper,
// on a crashable in-memory FS; at random moments it takes a crash clone,
// reopens the log on it and checks what survived against what had been
// acknowledged before the clone was taken.
func runCrash(t *testing.T, cfg crashConfig) crashReport {
	t.Helper()
	fs := vfs.NewCrashableMem()
	ctx := context.Background()
	l, err := Open(ctx, "wal", Options{FS: fs, Logger: testLogger, noSync: cfg.noSync})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	}()

	var ackMu sync.Mutex
	acked := map[uint64][]byte{} // seq → payload, for acknowledged records
	var truncatedAck uint64      // highest acknowledged Truncate

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range cfg.writers {
		wg.Go(func() {
			for app := 0; ; app++ {
				select {
				case <-stop:
					return
				default:
				}
				n := 1 + (w+app)%6
				group := make([][]byte, n)
				for i := range group {
					group[i] = crashPayload(w, app, i, n)
				}
				first, _, err := l.Append(ctx, group)
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				ackMu.Lock()
				for i, p := range group {
					acked[first+uint64(i)] = p
				}
				ackMu.Unlock()
			}
		})
	}
	// The shipper: truncate a while behind the newest record.
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			upTo := l.Stats().LastSeq
			if upTo < 200 {
				continue
			}
			upTo -= 200
			if err := l.Truncate(ctx, upTo); err != nil {
				t.Errorf("Truncate: %v", err)
				return
			}
			ackMu.Lock()
			truncatedAck = max(truncatedAck, upTo)
			ackMu.Unlock()
		}
	})

	rng := rand.New(rand.NewPCG(cfg.seed, 0x5eed))
	var report crashReport
	for range cfg.clones {
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		// Take what was acknowledged before the clone, then the clone.
		ackMu.Lock()
		snapshot := make(map[uint64][]byte, len(acked))
		for s, p := range acked {
			snapshot[s] = p
		}
		truncated := truncatedAck
		ackMu.Unlock()
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: cfg.unsynced(rng), RNG: rng})
		checkClone(t, clone, snapshot, truncated, &report)
		report.clones++
	}
	close(stop)
	wg.Wait()
	return report
}

// checkClone reopens the log on a crash clone and compares it with what was
// acknowledged before the clone was taken.
func checkClone(t *testing.T, clone *vfs.MemFS, acked map[uint64][]byte, truncatedAck uint64, report *crashReport) {
	t.Helper()
	ctx := context.Background()
	l, err := Open(ctx, "wal", Options{FS: clone, Logger: testLogger})
	if err != nil {
		report.problemf("reopen after crash: %v", err)
		return
	}
	defer func() { _ = l.Close() }()
	st := l.Stats()
	if st.TruncatedSeq < truncatedAck {
		report.problemf("truncation point %d after crash, %d was acknowledged", st.TruncatedSeq, truncatedAck)
	}
	recs := readAll(t, l)
	bySeq := make(map[uint64][]byte, len(recs))
	var present uint64
	for i, r := range recs {
		bySeq[r.Seq] = r.Payload
		present = r.Seq
		if want := st.TruncatedSeq + 1 + uint64(i); r.Seq != want {
			report.problemf("record %d where %d belongs: hole", r.Seq, want)
		}
		// Nothing else: each record is one that an Append submitted, and
		// its group is there whole, in order.
		if len(r.Payload) < 12 {
			report.problemf("record %d: payload %x was never appended", r.Seq, r.Payload)
			continue
		}
		w := int(binary.BigEndian.Uint32(r.Payload[0:]))
		app := int(binary.BigEndian.Uint32(r.Payload[4:]))
		rec := int(binary.BigEndian.Uint16(r.Payload[8:]))
		n := int(binary.BigEndian.Uint16(r.Payload[10:]))
		if rec >= n || !bytes.Equal(r.Payload, crashPayload(w, app, rec, n)) {
			report.problemf("record %d: payload %x was never appended", r.Seq, r.Payload)
		}
	}
	for _, r := range recs {
		if len(r.Payload) < 12 {
			continue
		}
		rec := int(binary.BigEndian.Uint16(r.Payload[8:]))
		n := int(binary.BigEndian.Uint16(r.Payload[10:]))
		groupFirst := r.Seq - uint64(rec)
		for i := range n {
			s := groupFirst + uint64(i)
			if s <= st.TruncatedSeq {
				continue
			}
			if p, ok := bySeq[s]; !ok || len(p) < 8 || !bytes.Equal(p[:8], r.Payload[:8]) {
				report.problemf("record %d: its group [%d, %d] is not whole", r.Seq, groupFirst, groupFirst+uint64(n)-1)
				break
			}
		}
	}
	// Every acknowledged record above the truncation point survived.
	var maxAcked uint64
	for s, p := range acked {
		maxAcked = max(maxAcked, s)
		if s <= st.TruncatedSeq {
			continue
		}
		report.acked++
		if got, ok := bySeq[s]; !ok || !bytes.Equal(got, p) {
			report.lost++
		}
	}
	// Sequences go on above everything present and acknowledged.
	first, _, err := l.Append(ctx, [][]byte{crashPayload(999, 0, 0, 1)})
	switch {
	case err != nil:
		report.problemf("Append after crash: %v", err)
	case first <= max(present, maxAcked, st.TruncatedSeq):
		report.problemf("Append after crash got %d; present up to %d, acknowledged up to %d, truncated %d",
			first, present, maxAcked, st.TruncatedSeq)
	}
}

func TestCrashKeepsAcknowledgedRecords(t *testing.T) {
	t.Parallel()
	clones := 30
	if testing.Short() {
		clones = 8
	}
	report := runCrash(t, crashConfig{
		writers: 8,
		clones:  clones,
		seed:    uint64(time.Now().UnixNano()),
		// Half the clones keep only synced data, the others some of the
		// unsynced blocks too (torn tails).
		unsynced: func(rng *rand.Rand) int {
			if rng.IntN(2) == 0 {
				return 0
			}
			return rng.IntN(101)
		},
	})
	for _, p := range report.problems {
		t.Error(p)
	}
	if report.lost > 0 {
		t.Fatalf("%d of %d acknowledged records lost over %d crashes", report.lost, report.acked, report.clones)
	}
	if report.acked == 0 {
		t.Fatal("no acknowledged record was checked")
	}
	if !t.Failed() {
		t.Logf("%d crashes: all %d acknowledged records survived", report.clones, report.acked)
	}
}

// TestCrashTestDetectsMissingFsync runs the same scenario with commits that
// skip the fsync, and requires the crash check to notice the loss: proof
// that the test above would fail if Append acknowledged before syncing.
func TestCrashTestDetectsMissingFsync(t *testing.T) {
	t.Parallel()
	report := runCrash(t, crashConfig{
		noSync:   true,
		writers:  8,
		clones:   5,
		seed:     1,
		unsynced: func(*rand.Rand) int { return 0 },
	})
	if report.lost == 0 {
		t.Fatalf("without fsync no acknowledged record was lost in %d crashes (%d checked): the crash test cannot see missing syncs",
			report.clones, report.acked)
	}
	t.Logf("without fsync the crash check found %d of %d acknowledged records lost over %d crashes",
		report.lost, report.acked, report.clones)
}
