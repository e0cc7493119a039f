package primary

import (
	"testing"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

func completion(scan string, count int64, startSec int) *longhaulv1.ScanCompletion {
	return &longhaulv1.ScanCompletion{ScanId: scan, AccountId: "acme", Asset: "a.example", Checker: "tls",
		InsightCount: count, StartedAt: ts(startSec), FinishedAt: ts(startSec + 5)}
}

func resolved(t *testing.T, b *bundle) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for k, r := range b.table(t) {
		out[k[len("acme/a.example/"):]] = r.Resolved != nil
	}
	return out
}

func TestScanCompletionResolvesWhatTheScanDidNotSee(t *testing.T) {
	t.Parallel()
	b := setup(t, ApplierConfig{})
	// scan-1 sees k/a, k/b, k/c; another checker's insight on the same asset.
	other := ins("http", "x", 1, "scan-h")
	other.Checker = "http"
	b.apply(t, "e1", 1, 1, []*longhaulv1.BatchInsight{ins("k", "a", 1, "scan-1"), ins("k", "b", 1, "scan-1"), ins("k", "c", 1, "scan-1"), other},
		completion("scan-1", 3, 0))
	// scan-2 sees k/a and k/b only: k/c is resolved, the http insight is not.
	res := b.apply(t, "e1", 2, 2, []*longhaulv1.BatchInsight{ins("k", "a", 11, "scan-2"), ins("k", "b", 11, "scan-2")},
		completion("scan-2", 2, 10))
	if res.Resolved != 1 {
		t.Errorf("resolved %d insights, want 1", res.Resolved)
	}
	want := map[string]bool{"k/a": false, "k/b": false, "k/c": true, "http/x": false}
	got := resolved(t, b)
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s resolved = %v, want %v", k, got[k], w)
		}
	}
	if r := b.table(t)["acme/a.example/k/c"].Resolved; r == nil || !r.Equal(base.Add(10*time.Second)) {
		t.Errorf("k/c resolved as of %v, want the start of scan-2", r)
	}

	// Seen again by a later scan: reopened.
	b.apply(t, "e1", 3, 3, []*longhaulv1.BatchInsight{ins("k", "c", 21, "scan-3")})
	if resolved(t, b)["k/c"] {
		t.Error("k/c still resolved after being seen again")
	}
	// A late observation from before the resolution does not reopen it.
	b.apply(t, "e1", 4, 4, nil, completion("scan-4", 0, 30)) // sees nothing: resolves all
	b.apply(t, "e1", 5, 5, []*longhaulv1.BatchInsight{ins("k", "a", 25, "scan-late")})
	if !resolved(t, b)["k/a"] {
		t.Error("an observation older than the resolution reopened k/a")
	}
}

func TestScanCompletionArrivingFirstWaits(t *testing.T) {
	t.Parallel()
	b := setup(t, ApplierConfig{})
	b.apply(t, "e1", 1, 1, []*longhaulv1.BatchInsight{ins("k", "a", 1, "scan-1"), ins("k", "b", 1, "scan-1"), ins("k", "c", 1, "scan-1")})

	// scan-2 will see a and b, but its completion arrives first (through
	// another edge), then its insights in two batches.
	if res := b.apply(t, "e2", 1, 1, nil, completion("scan-2", 2, 10)); res.Resolved != 0 {
		t.Fatalf("completion before its insights resolved %d", res.Resolved)
	}
	if got := resolved(t, b); got["k/a"] || got["k/b"] || got["k/c"] {
		t.Fatalf("resolved too early: %v", got)
	}
	if res := b.apply(t, "e1", 2, 2, []*longhaulv1.BatchInsight{ins("k", "a", 11, "scan-2")}); res.Resolved != 0 {
		t.Fatalf("resolved %d with one of two insights applied", res.Resolved)
	}
	if got := resolved(t, b); got["k/b"] || got["k/c"] {
		t.Fatalf("resolved with one of two insights applied: %v", got)
	}
	if res := b.apply(t, "e1", 3, 3, []*longhaulv1.BatchInsight{ins("k", "b", 11, "scan-2")}); res.Resolved != 1 {
		t.Fatalf("resolved %d once all insights arrived, want 1", res.Resolved)
	}
	if got := resolved(t, b); got["k/a"] || got["k/b"] || !got["k/c"] {
		t.Fatalf("after all insights: %v, want only k/c resolved", got)
	}
	// A repeated completion changes nothing.
	if res := b.apply(t, "e2", 2, 2, nil, completion("scan-2", 2, 10)); res.Resolved != 0 {
		t.Fatalf("repeated completion resolved %d", res.Resolved)
	}
}
