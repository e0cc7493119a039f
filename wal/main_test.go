package wal

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger keeps test output quiet: failures surface as returned errors.
var testLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// openLog opens a log in dir on opts.FS (a fresh in-memory FS when nil) and
// closes it when the test ends.
func openLog(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	if opts.FS == nil {
		opts.FS = vfs.NewMem()
	}
	if opts.Logger == nil {
		opts.Logger = testLogger
	}
	l, err := Open(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// payloads returns n payloads named after tag.
func payloads(tag string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s-%d", tag, i)
	}
	return out
}

// readAll reads every live record.
func readAll(t testing.TB, l *Log) []Record {
	t.Helper()
	var out []Record
	from := uint64(0)
	for {
		recs, err := l.Read(context.Background(), from, 1000, 0)
		if err != nil {
			t.Fatalf("Read(%d): %v", from, err)
		}
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		from = recs[len(recs)-1].Seq + 1
	}
}
