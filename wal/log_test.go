package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestAppendReadRoundTrip(t *testing.T) {
	t.Parallel()
	l := openLog(t, "wal", Options{})
	ctx := context.Background()

	first, last, err := l.Append(ctx, payloads("a", 3))
	if err != nil || first != 1 || last != 3 {
		t.Fatalf("Append = %d, %d, %v; want 1, 3, nil", first, last, err)
	}
	first, last, err = l.Append(ctx, [][]byte{{}, []byte("x")})
	if err != nil || first != 4 || last != 5 {
		t.Fatalf("Append = %d, %d, %v; want 4, 5, nil", first, last, err)
	}
	want := append(payloads("a", 3), []byte{}, []byte("x"))
	got := readAll(t, l)
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i, r := range got {
		if r.Seq != uint64(i+1) || !bytes.Equal(r.Payload, want[i]) {
			t.Errorf("record %d = {%d %q}, want {%d %q}", i, r.Seq, r.Payload, i+1, want[i])
		}
		if r.AppendedAt.IsZero() || time.Since(r.AppendedAt) > time.Minute {
			t.Errorf("record %d AppendedAt = %v", i, r.AppendedAt)
		}
	}
}

func TestAppendRejectsEmptyGroup(t *testing.T) {
	t.Parallel()
	l := openLog(t, "wal", Options{})
	if _, _, err := l.Append(context.Background(), nil); err == nil {
		t.Fatal("Append(nil) succeeded")
	}
}

func TestAppendDoesNotKeepPayloads(t *testing.T) {
	t.Parallel()
	l := openLog(t, "wal", Options{})
	p := []byte("before")
	if _, _, err := l.Append(context.Background(), [][]byte{p}); err != nil {
		t.Fatal(err)
	}
	copy(p, "AFTER!")
	if got := readAll(t, l)[0].Payload; string(got) != "before" {
		t.Fatalf("payload = %q after the caller reused its buffer", got)
	}
}

func TestConcurrentAppends(t *testing.T) {
	t.Parallel()
	l := openLog(t, "wal", Options{})
	ctx := context.Background()
	const writers, appends = 32, 40

	type span struct {
		first, last uint64
		tag         string
		n           int
	}
	var mu sync.Mutex
	var spans []span
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for a := range appends {
				n := 1 + (w+a)%5
				tag := fmt.Sprintf("w%d-a%d", w, a)
				first, last, err := l.Append(ctx, payloads(tag, n))
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				spans = append(spans, span{first, last, tag, n})
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	sort.Slice(spans, func(i, j int) bool { return spans[i].first < spans[j].first })
	next := uint64(1)
	for _, s := range spans {
		if s.first != next || s.last != s.first+uint64(s.n)-1 {
			t.Fatalf("span %s = [%d, %d] with %d records, want to start at %d", s.tag, s.first, s.last, s.n, next)
		}
		next = s.last + 1
	}
	recs := readAll(t, l)
	if uint64(len(recs)) != next-1 {
		t.Fatalf("read %d records, want %d", len(recs), next-1)
	}
	for _, s := range spans {
		for i := range s.n {
			r := recs[s.first-1+uint64(i)]
			if want := fmt.Sprintf("%s-%d", s.tag, i); string(r.Payload) != want {
				t.Fatalf("record %d = %q, want %q", r.Seq, r.Payload, want)
			}
		}
	}
	st := l.Stats()
	if st.Appends != writers*appends || st.AppendedRecords != next-1 {
		t.Errorf("Stats = %+v", st)
	}
	if st.Syncs == 0 || st.Syncs > st.Appends {
		t.Errorf("Syncs = %d for %d appends", st.Syncs, st.Appends)
	}
	t.Logf("%d appends shared %d fsyncs", st.Appends, st.Syncs)
}

func TestReadLimits(t *testing.T) {
	t.Parallel()
	l := openLog(t, "wal", Options{})
	ctx := context.Background()
	for i := range 10 {
		if _, _, err := l.Append(ctx, [][]byte{bytes.Repeat([]byte{byte('a' + i)}, 10)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name                string
		from                uint64
		maxRecords, maxByte int
		wantFirst, wantN    int
	}{
		{"from zero", 0, 100, 0, 1, 10},
		{"from middle", 4, 100, 0, 4, 7},
		{"max records", 4, 3, 0, 4, 3},
		{"max bytes", 2, 100, 25, 2, 2},
		{"max bytes exactly", 2, 100, 30, 2, 3},
		{"max bytes below one record", 2, 100, 1, 2, 1},
		{"last", 10, 100, 0, 10, 1},
		{"past the end", 11, 100, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := l.Read(ctx, tc.from, tc.maxRecords, tc.maxByte)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != tc.wantN {
				t.Fatalf("got %d records, want %d", len(recs), tc.wantN)
			}
			for i, r := range recs {
				if r.Seq != uint64(tc.wantFirst+i) || r.Payload[0] != byte('a'+tc.wantFirst+i-1) {
					t.Errorf("record %d = {%d %q}", i, r.Seq, r.Payload)
				}
			}
		})
	}
	if _, err := l.Read(ctx, 0, 0, 0); err == nil {
		t.Error("Read with maxRecords 0 succeeded")
	}
}

func TestTruncateAndReopen(t *testing.T) {
	t.Parallel()
	fs := vfs.NewMem()
	ctx := context.Background()
	l, err := Open(ctx, "wal", Options{FS: fs, Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, _, err := l.Append(ctx, payloads(fmt.Sprint(i), 2)); err != nil {
			t.Fatal(err)
		}
	}
	before := l.Stats()
	if err := l.Truncate(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if err := l.Truncate(ctx, 3); err != nil {
		t.Fatalf("Truncate below the truncation point: %v", err)
	}
	if err := l.Truncate(ctx, 21); err == nil {
		t.Fatal("Truncate beyond the last record succeeded")
	}
	after := l.Stats()
	if after.TruncatedSeq != 7 || after.Records != 13 || after.Bytes >= before.Bytes {
		t.Fatalf("Stats after Truncate(7) = %+v (before %+v)", after, before)
	}
	if recs, _ := l.Read(ctx, 2, 1, 0); len(recs) != 1 || recs[0].Seq != 8 {
		t.Fatalf("Read(2) after Truncate(7) = %+v, want record 8", recs)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openLog(t, "wal", Options{FS: fs})
	st := l.Stats()
	if st.TruncatedSeq != 7 || st.LastSeq != 20 || st.Records != 13 || st.Bytes != after.Bytes {
		t.Fatalf("Stats after reopen = %+v, want %+v", st, after)
	}
	recs := readAll(t, l)
	if len(recs) != 13 || recs[0].Seq != 8 || string(recs[0].Payload) != "3-1" {
		t.Fatalf("after reopen read %d records starting %+v", len(recs), recs[0])
	}
	if first, _, err := l.Append(ctx, payloads("x", 1)); err != nil || first != 21 {
		t.Fatalf("Append after reopen = %d, %v; want 21", first, err)
	}
}

func TestSequenceContinuesAfterTruncatingEverything(t *testing.T) {
	t.Parallel()
	fs := vfs.NewMem()
	ctx := context.Background()
	for round := range 3 {
		l, err := Open(ctx, "wal", Options{FS: fs, Logger: testLogger})
		if err != nil {
			t.Fatal(err)
		}
		first, last, err := l.Append(ctx, payloads("r", 5))
		if want := uint64(round*5 + 1); err != nil || first != want {
			t.Fatalf("round %d: Append = %d, %v; want %d", round, first, err, want)
		}
		if err := l.Truncate(ctx, last); err != nil {
			t.Fatal(err)
		}
		st := l.Stats()
		if st.Records != 0 || st.Bytes != 0 || !st.OldestAppendedAt.IsZero() {
			t.Fatalf("Stats after truncating everything = %+v", st)
		}
		if recs := readAll(t, l); len(recs) != 0 {
			t.Fatalf("read %d records after truncating everything", len(recs))
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestQuota(t *testing.T) {
	t.Parallel()
	const payloadLen = 100
	quota := 10 * recordSize(payloadLen)
	l := openLog(t, "wal", Options{QuotaBytes: quota})
	ctx := context.Background()
	group := func(n int) [][]byte {
		g := make([][]byte, n)
		for i := range g {
			g[i] = make([]byte, payloadLen)
		}
		return g
	}

	if _, _, err := l.Append(ctx, group(4)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Append(ctx, group(4)); err != nil {
		t.Fatal(err)
	}
	// 8 of 10 used: a group of 3 does not fit, and none of it is written.
	if _, _, err := l.Append(ctx, group(3)); !errors.Is(err, ErrFull) {
		t.Fatalf("Append beyond quota: err = %v, want ErrFull", err)
	}
	if _, _, err := l.Append(ctx, group(11)); !errors.Is(err, ErrFull) {
		t.Fatalf("Append larger than the quota: err = %v, want ErrFull", err)
	}
	st := l.Stats()
	if st.Records != 8 || st.Bytes != 8*recordSize(payloadLen) || st.FullRejections != 2 {
		t.Fatalf("Stats after ErrFull = %+v", st)
	}
	if recs := readAll(t, l); len(recs) != 8 {
		t.Fatalf("read %d records after ErrFull, want 8", len(recs))
	}
	// Exactly filling the quota is allowed.
	if first, _, err := l.Append(ctx, group(2)); err != nil || first != 9 {
		t.Fatalf("Append filling the quota = %d, %v", first, err)
	}
	if _, _, err := l.Append(ctx, group(1)); !errors.Is(err, ErrFull) {
		t.Fatalf("Append on a full log: err = %v, want ErrFull", err)
	}
	// Truncation frees quota.
	if err := l.Truncate(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if first, last, err := l.Append(ctx, group(3)); err != nil || first != 11 || last != 13 {
		t.Fatalf("Append after Truncate = %d, %d, %v; want 11, 13", first, last, err)
	}
	if _, _, err := l.Append(ctx, group(1)); !errors.Is(err, ErrFull) {
		t.Fatalf("Append on a full log: err = %v, want ErrFull", err)
	}
}

// TestQuotaUnderConcurrency checks the committer's exact check: many
// concurrent Appends never take the log past its quota, and every refused
// group is absent.
func TestQuotaUnderConcurrency(t *testing.T) {
	t.Parallel()
	quota := 50 * recordSize(len("w00-a00")+1)
	l := openLog(t, "wal", Options{QuotaBytes: quota})
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := map[string]bool{}
	for w := range 16 {
		wg.Go(func() {
			for a := range 10 {
				tag := fmt.Sprintf("w%02d-a%02d", w, a)
				_, _, err := l.Append(ctx, [][]byte{[]byte(tag + "0"), []byte(tag + "1")})
				switch {
				case err == nil:
					mu.Lock()
					accepted[tag] = true
					mu.Unlock()
				case !errors.Is(err, ErrFull):
					t.Errorf("Append: %v", err)
				}
			}
		})
	}
	wg.Wait()
	recs := readAll(t, l)
	if len(recs) != 50 || l.Stats().Bytes != quota {
		t.Fatalf("read %d records, %d bytes; want the quota filled: 50, %d", len(recs), l.Stats().Bytes, quota)
	}
	for _, r := range recs {
		if !accepted[string(r.Payload[:len(r.Payload)-1])] {
			t.Errorf("record %d %q is from a refused Append", r.Seq, r.Payload)
		}
	}
	if len(accepted) != 25 {
		t.Errorf("%d Appends accepted, want 25", len(accepted))
	}
}

func TestWait(t *testing.T) {
	t.Parallel()
	l := openLog(t, "wal", Options{})
	ctx := context.Background()

	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx, 0) }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v before any record", err)
	case <-time.After(20 * time.Millisecond):
	}
	if _, _, err := l.Append(ctx, payloads("a", 2)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if err := l.Wait(ctx, 1); err != nil {
		t.Fatalf("Wait(1) with record 2 there: %v", err)
	}

	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := l.Wait(short, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past the end: %v, want DeadlineExceeded", err)
	}

	go func() { done <- l.Wait(ctx, 2) }()
	time.Sleep(10 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait across Close: %v, want ErrClosed", err)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	l := openLog(t, "wal", Options{})
	ctx := context.Background()
	if _, _, err := l.Append(ctx, payloads("a", 1)); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := l.Append(ctx, payloads("b", 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v", err)
	}
	if _, err := l.Read(ctx, 0, 10, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if err := l.Truncate(ctx, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Truncate after Close: %v", err)
	}
}

// TestCloseDuringAppends closes while many Appends run: each either succeeds
// (and its records are there after reopen) or fails with ErrClosed.
func TestCloseDuringAppends(t *testing.T) {
	t.Parallel()
	fs := vfs.NewMem()
	ctx := context.Background()
	l, err := Open(ctx, "wal", Options{FS: fs, Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[uint64]bool{}
	for range 8 {
		wg.Go(func() {
			for {
				first, last, err := l.Append(ctx, payloads("x", 3))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				for s := first; s <= last; s++ {
					acked[s] = true
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	l = openLog(t, "wal", Options{FS: fs})
	recs := readAll(t, l)
	if len(recs) < len(acked) {
		t.Fatalf("%d records after reopen, %d acknowledged", len(recs), len(acked))
	}
	for _, r := range recs {
		delete(acked, r.Seq)
	}
	if len(acked) != 0 {
		t.Fatalf("%d acknowledged records missing", len(acked))
	}
}

func TestAppendCanceled(t *testing.T) {
	t.Parallel()
	l := openLog(t, "wal", Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := l.Append(ctx, payloads("a", 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a canceled ctx: %v", err)
	}
	if st := l.Stats(); st.LastSeq != 0 {
		t.Fatalf("a canceled Append wrote: %+v", st)
	}
}

func TestStatsOldestAppendedAt(t *testing.T) {
	t.Parallel()
	fs := vfs.NewMem()
	clock := time.Unix(1_700_000_000, 0)
	var clockMu sync.Mutex
	now := func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		clock = clock.Add(time.Second)
		return clock
	}
	opts := Options{FS: fs, now: now}
	l := openLog(t, "wal", opts)
	ctx := context.Background()
	if st := l.Stats(); !st.OldestAppendedAt.IsZero() {
		t.Fatalf("empty log: OldestAppendedAt = %v", st.OldestAppendedAt)
	}
	for range 3 {
		if _, _, err := l.Append(ctx, payloads("a", 2)); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Unix(1_700_000_000, 0)
	if got := l.Stats().OldestAppendedAt; !got.Equal(base.Add(time.Second)) {
		t.Fatalf("OldestAppendedAt = %v, want %v", got, base.Add(time.Second))
	}
	if err := l.Truncate(ctx, 3); err != nil { // record 4 is the second group's
		t.Fatal(err)
	}
	if got := l.Stats().OldestAppendedAt; !got.Equal(base.Add(2 * time.Second)) {
		t.Fatalf("after Truncate(3): OldestAppendedAt = %v, want %v", got, base.Add(2*time.Second))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, "wal", opts)
	if got := l.Stats().OldestAppendedAt; !got.Equal(base.Add(2 * time.Second)) {
		t.Fatalf("after reopen: OldestAppendedAt = %v, want %v", got, base.Add(2*time.Second))
	}
}

// TestTruncateReclaimsSpace checks that truncated records leave the disk:
// the background compaction drops the sstables holding them.
func TestTruncateReclaimsSpace(t *testing.T) {
	t.Parallel()
	l := openLog(t, "wal", Options{MemTableSize: 1 << 20, CompactAfterBytes: 1 << 20})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	group := make([][]byte, 100)
	for i := range group {
		group[i] = make([]byte, 1000)
		for j := range group[i] {
			group[i][j] = byte(rng.Uint32())
		}
	}
	var last uint64
	for range 80 { // 8 MB
		var err error
		if _, last, err = l.Append(ctx, group); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.db.Flush(); err != nil {
		t.Fatal(err)
	}
	tables := func() int64 { return l.db.Metrics().Total().TablesSize }
	full := tables()
	if full < 7<<20 {
		t.Fatalf("sstables hold %d bytes before truncation, want the 8 MB appended", full)
	}
	if err := l.Truncate(ctx, last); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		used := tables()
		if used < full/100 {
			t.Logf("sstables: %d bytes before truncation, %d after", full, used)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sstables: %d bytes before truncation, still %d after", full, used)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{"zero", Options{}, true},
		{"negative quota", Options{QuotaBytes: -1}, false},
		{"negative group", Options{MaxGroupBytes: -1}, false},
		{"tiny memtable", Options{MemTableSize: 1000}, false},
		{"huge memtable", Options{MemTableSize: 4 << 30}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.withDefaults().validate()
			if (err == nil) != tc.ok {
				t.Fatalf("validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if _, err := Open(context.Background(), "wal", Options{FS: vfs.NewMem(), QuotaBytes: -1}); err == nil {
		t.Fatal("Open with invalid options succeeded")
	}
}
