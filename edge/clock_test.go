package edge

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// The edge's clock jumping backwards (ten minutes, mid-run) makes no
// insight regress: the edge stamps nothing of its own time on insights,
// sequences keep rising, and the primary keeps the latest observation of
// each key whatever arrives after the jump. Only the future-skew check reads
// the edge's clock, and it refuses (never rewrites) what it cannot place.
func TestEdgeClockJumpingBackwardsRegressesNothing(t *testing.T) {
	t.Parallel()
	s := startSystem(t, Config{})
	var offset atomic.Int64
	s.edge.server.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	ctx := context.Background()
	real := time.Now().Truncate(time.Microsecond)
	t2, t1 := real.Add(-time.Minute), real.Add(-2*time.Minute)

	first, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{
		insight("scan-new", "tls.expiry", "443", t2), insight("scan-new", "tls.expiry", "8443", t2)}})
	if err != nil {
		t.Fatal(err)
	}
	offset.Store(int64(-10 * time.Minute)) // the edge's clock jumps back
	second, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{
		insight("scan-old", "tls.expiry", "443", t1), insight("scan-old", "tls.expiry", "8443", t1)}})
	if err != nil {
		t.Fatalf("an observation 8 minutes ahead of the edge's clock, within the skew: %v", err)
	}
	if second.FirstSeq <= first.LastSeq {
		t.Fatalf("sequences went back with the clock: %d..%d then %d..%d", first.FirstSeq, first.LastSeq, second.FirstSeq, second.LastSeq)
	}
	// Beyond the skew from the jumped clock: refused whole, nothing written.
	offset.Store(int64(-DefaultMaxClockSkew - time.Minute))
	if _, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{insight("scan-x", "tls.expiry", "9443", real)}}); err == nil {
		t.Fatal("an observation beyond the skew of the edge's clock was accepted")
	}
	eventually(t, "both keys applied", func() (bool, string) {
		var n int
		if err := s.db.QueryRow(ctx, `SELECT count(*) FROM edge_ledger WHERE applied_seq >= $1`, second.LastSeq).Scan(&n); err != nil {
			return false, err.Error()
		}
		return n == 1, fmt.Sprint(n, " ledger rows at ", second.LastSeq)
	})
	rows, err := s.db.Query(ctx, `SELECT subject, last_seen_at, scan_id FROM insights ORDER BY subject`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var subject, scan string
		var seen time.Time
		if err := rows.Scan(&subject, &seen, &scan); err != nil {
			t.Fatal(err)
		}
		n++
		if !seen.Equal(t2) || scan != "scan-new" {
			t.Errorf("%s: last seen %s by %s, want %s by scan-new: an older observation won after the clock jumped", subject, seen, scan, t2)
		}
	}
	if n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
}
