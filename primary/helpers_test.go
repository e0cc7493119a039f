package primary

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// base is the time test insights are observed around.
var base = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func at(sec int) int64 { return base.Add(time.Duration(sec) * time.Second).UnixMicro() }

func ts(sec int) *timestamppb.Timestamp {
	return timestamppb.New(base.Add(time.Duration(sec) * time.Second))
}

// ins makes a test insight of account "acme", asset "a.example".
func ins(kind, subject string, sec int, scan string) *longhaulv1.BatchInsight {
	return &longhaulv1.BatchInsight{
		AccountId: "acme", Asset: "a.example", Kind: kind, Subject: subject,
		Severity: longhaulv1.Severity_HIGH, Details: []byte(`{"n": 1}`),
		ObservedAtUnixMicros: at(sec), ScanId: scan, Checker: "tls",
	}
}

type bundle struct {
	pool    *pgxpool.Pool
	applier *Applier
	ctx     context.Context
}

func setup(t *testing.T, cfg ApplierConfig) *bundle {
	t.Helper()
	pool := pgtest.Pool(t)
	a, err := NewApplier(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{pool: pool, applier: a, ctx: context.Background()}
}

// apply applies a batch and fails the test on error.
func (b *bundle) apply(t *testing.T, edge string, first, last uint64, insights []*longhaulv1.BatchInsight, completions ...*longhaulv1.ScanCompletion) Result {
	t.Helper()
	res, err := b.applier.Apply(b.ctx, &longhaulv1.Batch{EdgeId: edge, FirstSeq: first, LastSeq: last, Insights: insights, Completions: completions})
	if err != nil {
		t.Fatalf("apply %s %d..%d: %v", edge, first, last, err)
	}
	return res
}

// stored is a row of the insights table as tests compare it.
type stored struct {
	Severity, ScanID, Checker string
	Details                   map[string]any
	FirstSeen, LastSeen       time.Time
	Resolved                  *time.Time
}

func (b *bundle) table(t *testing.T) map[string]stored { return tableOf(t, b.pool) }

// fataler is what test helpers need of *testing.T and *rapid.T.
type fataler interface {
	Helper()
	Fatal(args ...any)
}

func tableOf(t fataler, pool *pgxpool.Pool) map[string]stored {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT account_id, asset, kind, subject, severity, details::text, scan_id, checker,
		first_seen_at, last_seen_at, resolved_at FROM insights`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]stored{}
	for rows.Next() {
		var a, as, k, s, details string
		var r stored
		if err := rows.Scan(&a, &as, &k, &s, &r.Severity, &details, &r.ScanID, &r.Checker, &r.FirstSeen, &r.LastSeen, &r.Resolved); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(details), &r.Details); err != nil {
			t.Fatal(err)
		}
		r.FirstSeen, r.LastSeen = r.FirstSeen.UTC(), r.LastSeen.UTC()
		if r.Resolved != nil {
			u := r.Resolved.UTC()
			r.Resolved = &u
		}
		out[fmt.Sprintf("%s/%s/%s/%s", a, as, k, s)] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func (b *bundle) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(b.ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func newBatch(edge string, seq uint64, insights []*longhaulv1.BatchInsight) *longhaulv1.Batch {
	return &longhaulv1.Batch{EdgeId: edge, FirstSeq: seq, LastSeq: seq, Insights: insights}
}

func setupB(b *testing.B) *pgxpool.Pool {
	b.Helper()
	return pgtest.Pool(b)
}
