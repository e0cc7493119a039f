package wal

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"pgregory.net/rapid"
)

// TestModel runs random sequences of Append, Truncate, Read and reopen
// against a plain slice and requires the log to agree with it.
func TestModel(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		ctx := context.Background()
		fs := vfs.NewMem()
		quota := int64(rapid.IntRange(RecordOverhead, 40*RecordOverhead).Draw(t, "quota"))
		opts := Options{FS: fs, Logger: testLogger, QuotaBytes: quota}
		l, err := Open(ctx, "wal", opts)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if l != nil {
				_ = l.Close()
			}
		}()

		// The model: live payloads, the sequence of the first, and the
		// next sequence.
		var live [][]byte
		first, next := uint64(1), uint64(1)
		liveBytes := func() int64 {
			var n int64
			for _, p := range live {
				n += recordSize(len(p))
			}
			return n
		}

		t.Repeat(map[string]func(*rapid.T){
			"append": func(t *rapid.T) {
				group := rapid.SliceOfN(rapid.SliceOfN(rapid.Byte(), 0, 40), 1, 5).Draw(t, "group")
				var size int64
				for _, p := range group {
					size += recordSize(len(p))
				}
				f, la, err := l.Append(ctx, group)
				if liveBytes()+size > quota {
					if !errors.Is(err, ErrFull) {
						t.Fatalf("Append beyond quota: %d, %d, %v; want ErrFull", f, la, err)
					}
					return
				}
				if err != nil || f != next || la != next+uint64(len(group))-1 {
					t.Fatalf("Append = %d, %d, %v; want %d, %d", f, la, err, next, next+uint64(len(group))-1)
				}
				live = append(live, group...)
				next += uint64(len(group))
			},
			"truncate": func(t *rapid.T) {
				upTo := rapid.Uint64Range(0, next-1).Draw(t, "upTo")
				if err := l.Truncate(ctx, upTo); err != nil {
					t.Fatalf("Truncate(%d): %v", upTo, err)
				}
				if upTo >= first {
					live = live[upTo-first+1:]
					first = upTo + 1
				}
			},
			"read": func(t *rapid.T) {
				from := rapid.Uint64Range(0, next).Draw(t, "from")
				maxRecords := rapid.IntRange(1, 10).Draw(t, "maxRecords")
				maxBytes := rapid.IntRange(0, 100).Draw(t, "maxBytes")
				recs, err := l.Read(ctx, from, maxRecords, maxBytes)
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				start := max(from, first)
				var want [][]byte
				total := 0
				for s := start; s < next && len(want) < maxRecords; s++ {
					p := live[s-first]
					if maxBytes > 0 && len(want) > 0 && total+len(p) > maxBytes {
						break
					}
					want = append(want, p)
					total += len(p)
				}
				if len(recs) != len(want) {
					t.Fatalf("Read(%d, %d, %d) returned %d records, want %d", from, maxRecords, maxBytes, len(recs), len(want))
				}
				for i, r := range recs {
					if r.Seq != start+uint64(i) || !bytes.Equal(r.Payload, want[i]) {
						t.Fatalf("Read record %d = {%d %x}, want {%d %x}", i, r.Seq, r.Payload, start+uint64(i), want[i])
					}
				}
			},
			"reopen": func(t *rapid.T) {
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				if l, err = Open(ctx, "wal", opts); err != nil {
					t.Fatal(err)
				}
			},
			"": func(t *rapid.T) {
				st := l.Stats()
				if st.TruncatedSeq != first-1 || st.LastSeq != next-1 || st.Records != uint64(len(live)) || st.Bytes != liveBytes() {
					t.Fatalf("Stats = %+v; model: first %d, next %d, %d records, %d bytes", st, first, next, len(live), liveBytes())
				}
			},
		})
	})
}
