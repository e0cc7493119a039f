package primary

import (
	"strings"
	"testing"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// bothPaths runs a test once with UNNEST and once with COPY for every batch.
func bothPaths(t *testing.T, f func(t *testing.T, cfg ApplierConfig)) {
	t.Run("unnest", func(t *testing.T) { t.Parallel(); f(t, ApplierConfig{CopyThreshold: 1 << 30}) })
	t.Run("copy", func(t *testing.T) { t.Parallel(); f(t, ApplierConfig{CopyThreshold: 1}) })
}

func TestApplyLastWriterWins(t *testing.T) {
	t.Parallel()
	bothPaths(t, func(t *testing.T, cfg ApplierConfig) {
		b := setup(t, cfg)
		newer := ins("k", "s", 20, "scan-2")
		newer.Severity = longhaulv1.Severity_LOW
		newer.Details = []byte(`{"n": 2}`)
		// One batch holds both observations, the next an even older one.
		res := b.apply(t, "e1", 1, 2, []*longhaulv1.BatchInsight{ins("k", "s", 10, "scan-1"), newer})
		if res.Status != longhaulv1.Ack_APPLIED || res.Rows != 1 || res.Collapsed != 1 {
			t.Fatalf("first batch: %+v", res)
		}
		b.apply(t, "e1", 3, 3, []*longhaulv1.BatchInsight{ins("k", "s", 5, "scan-0")})
		got := b.table(t)["acme/a.example/k/s"]
		if got.Severity != "low" || got.ScanID != "scan-2" || got.Details["n"] != 2.0 {
			t.Errorf("winner = %+v, want scan-2's observation", got)
		}
		if !got.FirstSeen.Equal(base.Add(5*time.Second)) || !got.LastSeen.Equal(base.Add(20*time.Second)) {
			t.Errorf("first/last seen = %v / %v, want +5s / +20s", got.FirstSeen, got.LastSeen)
		}
	})
}

func TestApplyTieBreakIsDeterministic(t *testing.T) {
	t.Parallel()
	x := ins("k", "s", 10, "scan-a")
	y := ins("k", "s", 10, "scan-b") // same time: scan_id decides
	for _, order := range [][]*longhaulv1.BatchInsight{{x, y}, {y, x}} {
		b := setup(t, ApplierConfig{})
		b.apply(t, "e1", 1, 1, []*longhaulv1.BatchInsight{order[0]})
		b.apply(t, "e1", 2, 2, []*longhaulv1.BatchInsight{order[1]})
		if got := b.table(t)["acme/a.example/k/s"].ScanID; got != "scan-b" {
			t.Errorf("order %s,%s: winner %s, want scan-b", order[0].ScanId, order[1].ScanId, got)
		}
	}
}

func TestLedger(t *testing.T) {
	t.Parallel()
	b := setup(t, ApplierConfig{})
	batch := []*longhaulv1.BatchInsight{ins("k", "s", 1, "scan-1"), ins("k", "t", 1, "scan-1")}
	if res := b.apply(t, "e1", 1, 10, batch); res.Status != longhaulv1.Ack_APPLIED || res.AppliedSeq != 10 {
		t.Fatalf("first apply: %+v", res)
	}

	t.Run("a batch applied twice writes once", func(t *testing.T) {
		res := b.apply(t, "e1", 1, 10, batch)
		if res.Status != longhaulv1.Ack_DUPLICATE || res.AppliedSeq != 10 || res.Rows != 0 {
			t.Fatalf("second apply: %+v", res)
		}
		if n := b.count(t, `SELECT applied_count FROM scans WHERE scan_id = 'scan-1'`); n != 2 {
			t.Errorf("scan-1 applied_count = %d after a replay, want 2", n)
		}
		if n := b.count(t, `SELECT batches FROM edge_ledger WHERE edge_id = 'e1'`); n != 1 {
			t.Errorf("ledger counts %d batches, want 1", n)
		}
	})
	t.Run("a gap is reported, nothing written", func(t *testing.T) {
		res := b.apply(t, "e1", 12, 15, []*longhaulv1.BatchInsight{ins("gap", "s", 1, "scan-9")})
		if res.Status != longhaulv1.Ack_OUT_OF_SEQUENCE || res.AppliedSeq != 10 {
			t.Fatalf("apply after a gap: %+v", res)
		}
		if n := b.count(t, `SELECT count(*) FROM insights WHERE kind = 'gap'`); n != 0 {
			t.Errorf("a batch after a gap wrote %d rows", n)
		}
	})
	t.Run("an overlap is reported, nothing written", func(t *testing.T) {
		res := b.apply(t, "e1", 5, 20, []*longhaulv1.BatchInsight{ins("overlap", "s", 1, "scan-9")})
		if res.Status != longhaulv1.Ack_OUT_OF_SEQUENCE || res.AppliedSeq != 10 {
			t.Fatalf("apply of an overlap: %+v", res)
		}
	})
	t.Run("edges are independent", func(t *testing.T) {
		if res := b.apply(t, "e2", 1, 1, batch); res.Status != longhaulv1.Ack_APPLIED {
			t.Fatalf("other edge: %+v", res)
		}
		if seq, err := b.applier.AppliedSeq(b.ctx, "e1"); err != nil || seq != 10 {
			t.Fatalf("AppliedSeq(e1) = %d, %v", seq, err)
		}
	})
	t.Run("an invalid range is an error", func(t *testing.T) {
		for _, bad := range []*longhaulv1.Batch{{EdgeId: "e1", FirstSeq: 3, LastSeq: 2}, {EdgeId: "e1"}, {FirstSeq: 1, LastSeq: 1}} {
			if _, err := b.applier.Apply(b.ctx, bad); err == nil {
				t.Errorf("Apply(%v) succeeded", bad)
			}
		}
	})
}

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	bothPaths(t, func(t *testing.T, cfg ApplierConfig) {
		b := setup(t, cfg)
		nul := ins("nul", "a\x00b", 1, "scan-1")
		utf := ins("utf", "s", 1, "scan-1")
		utf.Asset = "bad\xff"
		esc := ins("escape", "s", 1, "scan-1")
		esc.Details = []byte(`{"x": "\u0000"}`)
		arr := ins("array", "s", 1, "scan-1")
		arr.Details = []byte(`[1, 2]`)
		sev := ins("severity", "s", 1, "scan-1")
		sev.Severity = 42
		var batch []*longhaulv1.BatchInsight
		for i := range 40 {
			batch = append(batch, ins("good", strings.Repeat("g", i+1), 1, "scan-1"))
		}
		batch = append(batch, nul, utf, esc, arr, sev)

		res := b.apply(t, "e1", 1, 1, batch)
		if res.Status != longhaulv1.Ack_APPLIED || res.DeadLetters != 5 || res.Rows != 40 || res.Path != PathSplit {
			t.Fatalf("result %+v, want 40 rows and 5 dead letters via split", res)
		}
		if n := b.count(t, `SELECT count(*) FROM insights WHERE kind = 'good'`); n != 40 {
			t.Errorf("%d good rows applied, want 40", n)
		}
		reasons := map[string]string{}
		rows, err := b.pool.Query(b.ctx, `SELECT insight_key, sqlstate, reason, payload FROM dead_letters WHERE edge_id = 'e1'`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var key, state, reason string
			var payload []byte
			if err := rows.Scan(&key, &state, &reason, &payload); err != nil {
				t.Fatal(err)
			}
			if state == "" || reason == "" || len(payload) == 0 {
				t.Errorf("dead letter %q lacks its reason or payload: %q %q", key, state, reason)
			}
			reasons[strings.Split(key, "/")[2]] = state + " " + reason
		}
		for _, kind := range []string{"nul", "utf", "escape", "array", "severity"} {
			if reasons[kind] == "" {
				t.Errorf("no dead letter for %s (have %v)", kind, reasons)
			}
		}
		t.Logf("reasons: %v", reasons)
		// The next batch is unaffected.
		if res := b.apply(t, "e1", 2, 2, []*longhaulv1.BatchInsight{ins("after", "s", 2, "scan-2")}); res.Status != longhaulv1.Ack_APPLIED || res.DeadLetters != 0 {
			t.Fatalf("batch after dead letters: %+v", res)
		}
	})
}
