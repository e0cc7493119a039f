package wal

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// walFault injects errorfs.ErrInjected into operations of the given kinds on
// Pebble's WAL files (*.log) while it is on.
type walFault struct {
	on    atomic.Bool
	kinds []errorfs.OpKind
	hits  atomic.Int64
}

func (f *walFault) String() string { return "walFault" }

func (f *walFault) MaybeError(op errorfs.Op) error {
	if !f.on.Load() || !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	for _, k := range f.kinds {
		if op.Kind == k {
			f.hits.Add(1)
			return errorfs.ErrInjected
		}
	}
	return nil
}

func TestWriteFailureIsSticky(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		kinds []errorfs.OpKind
	}{
		{"sync", []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}},
		{"write", []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mem := vfs.NewMem()
			fault := &walFault{kinds: tc.kinds}
			ctx := context.Background()
			l, err := Open(ctx, "wal", Options{FS: errorfs.Wrap(mem, fault), Logger: testLogger})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := l.Append(ctx, payloads("ok", 3)); err != nil {
				t.Fatal(err)
			}

			fault.on.Store(true)
			first, last, err := l.Append(ctx, payloads("lost", 2))
			if err == nil || first != 0 || last != 0 {
				t.Fatalf("Append with a failing %s = %d, %d, %v; want an error", tc.name, first, last, err)
			}
			if !errors.Is(err, ErrFailed) || !errors.Is(err, errorfs.ErrInjected) {
				t.Fatalf("Append error %v does not wrap ErrFailed and the cause", err)
			}
			if fault.hits.Load() == 0 {
				t.Fatal("no fault was injected")
			}

			// Sticky, even once the disk works again.
			fault.on.Store(false)
			if _, _, err := l.Append(ctx, payloads("later", 1)); !errors.Is(err, ErrFailed) {
				t.Fatalf("Append after the failure: %v, want ErrFailed", err)
			}
			if err := l.Truncate(ctx, 1); !errors.Is(err, ErrFailed) {
				t.Fatalf("Truncate after the failure: %v, want ErrFailed", err)
			}
			if err := l.Wait(ctx, 3); !errors.Is(err, ErrFailed) {
				t.Fatalf("Wait after the failure: %v, want ErrFailed", err)
			}
			if st := l.Stats(); !errors.Is(st.Failed, ErrFailed) || st.LastSeq != 3 {
				t.Fatalf("Stats after the failure = %+v", st)
			}
			// What was acknowledged is still readable, and nothing else.
			recs := readAll(t, l)
			if len(recs) != 3 || string(recs[2].Payload) != "ok-2" {
				t.Fatalf("after the failure read %d records: %+v", len(recs), recs)
			}
			// Close works (Pebble may report the WAL's error).
			if err := l.Close(); err != nil {
				t.Logf("Close after the failure: %v", err)
			}

			// Reopened on the same files, the acknowledged records are there
			// and sequences go on above whatever the failed group left.
			l = openLog(t, "wal", Options{FS: mem})
			recs = readAll(t, l)
			if len(recs) < 3 || string(recs[0].Payload) != "ok-0" || string(recs[2].Payload) != "ok-2" {
				t.Fatalf("after reopen read %+v", recs)
			}
			first, _, err = l.Append(ctx, payloads("again", 1))
			if err != nil || first != recs[len(recs)-1].Seq+1 {
				t.Fatalf("Append after reopen = %d, %v; last record %d", first, err, recs[len(recs)-1].Seq)
			}
		})
	}
}
