package primary

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/pgtest"
)

// pgxSource feeds rows to pgx's generic CopyFrom, the encoding copyReader
// replaced: the reference the tests compare it with.
type pgxSource struct {
	rows []row
	i    int
}

func (s *pgxSource) Next() bool { s.i++; return s.i <= len(s.rows) }
func (s *pgxSource) Err() error { return nil }
func (s *pgxSource) Values() ([]any, error) {
	r := s.rows[s.i-1]
	return []any{r.In.AccountId, r.In.Asset, r.In.Kind, r.In.Subject, r.Severity, r.In.Details,
		r.In.ScanId, r.In.Checker, time.UnixMicro(r.FirstSeen), time.UnixMicro(r.In.ObservedAtUnixMicros), r.Hash}, nil
}

var pgxColumns = strings.Split(strings.ReplaceAll(insertColumns, " ", ""), ",")

// copyTables creates two tables shaped like the staging table, one for
// each encoder, on a connection of a fresh schema.
func copyTables(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgtest.Pool(t).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Release)
	for _, name := range []string{"copy_new", "copy_old"} {
		ddl := strings.Replace(strings.Replace(sqlCreateStaging, "TEMP ", "", 1), stagingTable, name, 1)
		ddl = strings.TrimSuffix(ddl, " ON COMMIT DELETE ROWS")
		if _, err := conn.Exec(ctx, ddl); err != nil {
			t.Fatal(err)
		}
	}
	return conn.Conn()
}

func awkwardRow(mod func(in *longhaulv1.BatchInsight, r *row)) row {
	in := &longhaulv1.BatchInsight{AccountId: "acme", Asset: "a.example", Kind: "k", Subject: "s",
		Details: []byte(`{"n": 1}`), ObservedAtUnixMicros: at(0), ScanId: "scan", Checker: "tls"}
	r := row{In: in, Severity: "high", FirstSeen: at(-1), Hash: 42}
	mod(in, &r)
	return r
}

func TestCopyBinaryMatchesPgx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := copyTables(t)
	long := strings.Repeat("long ✓ ", 20000)
	big := fmt.Sprintf(`{"list": [%s], "text": %q}`, strings.Repeat(`{"a": 1, "b": [true, null, "x"]},`, 30000)+"0", long)
	micros := func(s string) int64 {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v.UnixMicro()
	}
	mods := []func(in *longhaulv1.BatchInsight, r *row){
		func(in *longhaulv1.BatchInsight, r *row) {},
		func(in *longhaulv1.BatchInsight, r *row) {
			in.AccountId, in.Asset, in.Kind, in.Subject, in.ScanId, in.Checker, r.Severity = "", "", "", "", "", "", ""
		},
		func(in *longhaulv1.BatchInsight, r *row) {
			in.Asset, in.Subject, in.Checker = "ünïcødé.example", "日本語 — 🎉", "čěck"
			in.Details = []byte(`{"ü": "日本語 🎉", "esc": "\u00e9\n\t\"", "n": -1.5e300}`)
		},
		func(in *longhaulv1.BatchInsight, r *row) { in.Subject, in.Details = long, []byte(big) },
		func(in *longhaulv1.BatchInsight, r *row) { in.Details = nil }, // NULL details
		func(in *longhaulv1.BatchInsight, r *row) { in.Details = []byte(`null`) },
		func(in *longhaulv1.BatchInsight, r *row) { in.Details = []byte(` [1, "two", {"3": [ ]}] `) },
		func(in *longhaulv1.BatchInsight, r *row) { r.Hash = 0 },
		func(in *longhaulv1.BatchInsight, r *row) { r.Hash = -1 },
		func(in *longhaulv1.BatchInsight, r *row) { r.Hash = math.MinInt64 },
		func(in *longhaulv1.BatchInsight, r *row) { r.Hash = math.MaxInt64 },
		func(in *longhaulv1.BatchInsight, r *row) { r.FirstSeen, in.ObservedAtUnixMicros = 0, -1 },
		func(in *longhaulv1.BatchInsight, r *row) {
			r.FirstSeen, in.ObservedAtUnixMicros = micros("1999-12-31T23:59:59.999999Z"), micros("2000-01-01T00:00:00Z")
		},
		func(in *longhaulv1.BatchInsight, r *row) {
			r.FirstSeen, in.ObservedAtUnixMicros = micros("1900-02-28T01:02:03.000004Z"), micros("1066-10-14T09:00:00Z")
		},
		func(in *longhaulv1.BatchInsight, r *row) {
			r.FirstSeen, in.ObservedAtUnixMicros = micros("9999-12-31T23:59:59.999999Z"), 200_000*365*86400*1_000_000
		},
		// The extremes of int64 microseconds: accepted, the least one
		// wrapping to a far future as pgx's encoding did too.
		func(in *longhaulv1.BatchInsight, r *row) {
			r.FirstSeen, in.ObservedAtUnixMicros = math.MinInt64, math.MaxInt64
		},
	}
	var rows []row
	for i, mod := range mods {
		r := awkwardRow(mod)
		r.In.Kind += fmt.Sprint(i)
		rows = append(rows, r)
	}
	// Enough ordinary rows to span many chunks.
	for i := range 5000 {
		rows = append(rows, awkwardRow(func(in *longhaulv1.BatchInsight, r *row) {
			in.Subject = fmt.Sprint("bulk-", i)
			r.Hash = int64(i) * 7919
		}))
	}

	n, err := copyInto(ctx, conn.PgConn(), "copy_new", rows)
	if err != nil || n != int64(len(rows)) {
		t.Fatalf("copyInto: %d rows, %v; want %d", n, err, len(rows))
	}
	if n, err := conn.CopyFrom(ctx, pgx.Identifier{"copy_old"}, pgxColumns, &pgxSource{rows: rows}); err != nil || n != int64(len(rows)) {
		t.Fatalf("pgx CopyFrom: %d rows, %v; want %d", n, err, len(rows))
	}
	var missing, extra, nulls int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM (TABLE copy_old EXCEPT ALL TABLE copy_new) d),
		(SELECT count(*) FROM (TABLE copy_new EXCEPT ALL TABLE copy_old) d),
		(SELECT count(*) FROM copy_new WHERE details IS NULL)`).Scan(&missing, &extra, &nulls); err != nil {
		t.Fatal(err)
	}
	if missing != 0 || extra != 0 || nulls != 1 {
		t.Errorf("binary COPY vs pgx: %d rows missing, %d extra, %d NULL details (want 0, 0, 1)", missing, extra, nulls)
	}
	// A few values spelled out, should both encoders be wrong alike.
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT
		(SELECT first_seen_at = '1999-12-31 23:59:59.999999+00' AND last_seen_at = '2000-01-01 00:00:00+00' FROM copy_new WHERE kind = 'k12')
		AND (SELECT last_seen_at = '1066-10-14 09:00:00+00' FROM copy_new WHERE kind = 'k13')
		AND (SELECT details_hash = -9223372036854775808 FROM copy_new WHERE kind = 'k9')
		AND (SELECT subject = '日本語 — 🎉' AND details->>'ü' = '日本語 🎉' FROM copy_new WHERE kind = 'k2')
		AND (SELECT account_id = '' AND severity = '' FROM copy_new WHERE kind = '1')`).Scan(&ok); err != nil || !ok {
		t.Errorf("spelled-out values: %v, %v", ok, err)
	}
}

// TestCopyBinaryRefusesAsPgx checks that PostgreSQL refuses the same rows,
// with the same SQLSTATE, from both encoders: the applier dead-letters by it.
func TestCopyBinaryRefusesAsPgx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := copyTables(t)
	for name, mod := range map[string]func(in *longhaulv1.BatchInsight, r *row){
		"empty details":       func(in *longhaulv1.BatchInsight, r *row) { in.Details = []byte{} },
		"invalid json":        func(in *longhaulv1.BatchInsight, r *row) { in.Details = []byte(`{"a": `) },
		"nul in jsonb":        func(in *longhaulv1.BatchInsight, r *row) { in.Details = []byte(`{"x": "\u0000"}`) },
		"invalid utf8 json":   func(in *longhaulv1.BatchInsight, r *row) { in.Details = []byte("{\"x\": \"\xff\"}") },
		"nul in text":         func(in *longhaulv1.BatchInsight, r *row) { in.Subject = "a\x00b" },
		"invalid utf8 text":   func(in *longhaulv1.BatchInsight, r *row) { in.Asset = "bad\xff" },
		"timestamp too early": func(in *longhaulv1.BatchInsight, r *row) { r.FirstSeen = -10_000 * 365 * 86400 * 1_000_000 },
	} {
		rows := []row{awkwardRow(func(*longhaulv1.BatchInsight, *row) {}), awkwardRow(mod)}
		_, errNew := copyInto(ctx, conn.PgConn(), "copy_new", rows)
		_, errOld := conn.CopyFrom(ctx, pgx.Identifier{"copy_old"}, pgxColumns, &pgxSource{rows: rows})
		var pgNew, pgOld *pgconn.PgError
		if !errors.As(errNew, &pgNew) || !errors.As(errOld, &pgOld) || pgNew.Code != pgOld.Code || !refused(errNew) {
			t.Errorf("%s: binary COPY: %v; pgx: %v", name, errNew, errOld)
		}
	}
	if n := bothCount(t, conn); n != 0 {
		t.Errorf("%d rows stored by refused COPYs", n)
	}
}

func bothCount(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM copy_new) + (SELECT count(*) FROM copy_old)`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCopyBinaryCancelled(t *testing.T) {
	t.Parallel()
	conn := copyTables(t)
	rows := prepare(Synthetic(200000, 0, 200, base, "scan"), nil).rows
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := copyInto(ctx, conn.PgConn(), "copy_new", rows); err == nil {
		t.Fatal("copy of 200000 rows finished within 20ms")
	}
	// TestMain fails the run if the COPY left a goroutine behind.
}

func TestCopyReaderStream(t *testing.T) {
	t.Parallel()
	got, err := io.ReadAll(&copyReader{})
	if want := "PGCOPY\n\377\r\n\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00" + "\xff\xff"; err != nil || string(got) != want {
		t.Fatalf("no rows: %q, %v; want %q", got, err, want)
	}
	rows := prepare(Synthetic(3000, 0, 200, base, "scan"), nil).rows
	rows[0].In.Details = nil
	want, err := io.ReadAll(&copyReader{rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	if err := iotest.TestReader(&copyReader{rows: rows}, want); err != nil {
		t.Fatal(err)
	}
	one, err := io.ReadAll(iotest.OneByteReader(&copyReader{rows: rows}))
	if err != nil || !bytes.Equal(one, want) {
		t.Fatalf("read a byte at a time: %d bytes, %v; want %d", len(one), err, len(want))
	}
}

// BenchmarkCopy compares pgx's generic COPY encoding with copyReader on
// 100,000 rows copied into an empty table shaped like the staging table.
func BenchmarkCopy(b *testing.B) {
	ctx := context.Background()
	conn := copyTables(b)
	rows := prepare(Synthetic(100000, 0, 200, base, "scan"), nil).rows
	b.Run("encode-only", func(b *testing.B) {
		for b.Loop() {
			if _, err := io.Copy(io.Discard, &copyReader{rows: rows}); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, by := range []string{"pgx", "binary"} {
		b.Run(by, func(b *testing.B) {
			cpu0 := processCPU(b)
			for b.Loop() {
				b.StopTimer()
				if _, err := conn.Exec(ctx, `TRUNCATE copy_new, copy_old`); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				var err error
				if by == "pgx" {
					_, err = conn.CopyFrom(ctx, pgx.Identifier{"copy_old"}, pgxColumns, &pgxSource{rows: rows})
				} else {
					_, err = copyInto(ctx, conn.PgConn(), "copy_new", rows)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(rows)*b.N)/b.Elapsed().Seconds(), "rows/s")
			// The CPU this process (not PostgreSQL) spent, TRUNCATEs included.
			b.ReportMetric(float64((processCPU(b)-cpu0).Milliseconds())/float64(b.N), "client-cpu-ms/op")
		})
	}
}

// processCPU is the user and system CPU time the test process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
