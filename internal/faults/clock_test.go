package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/coalesce"
	"github.com/longhaul/longhaul/primary"
)

// clockInsight is an observation of key by checker at observed.
func clockInsight(key, scan, checker string, sev longhaulv1.Severity, observed time.Time) *longhaulv1.Insight {
	details, _ := structpb.NewStruct(map[string]any{"scan": scan, "seen": observed.Format(time.RFC3339Nano)})
	return &longhaulv1.Insight{AccountId: "acme", Asset: "clock.example", Kind: "clock", Subject: key, Severity: sev,
		Details: details, ObservedAt: timestamppb.New(observed), ScanId: scan, Checker: checker}
}

// wantTable is what last-writer-wins makes of ins, as the probe compares
// rows.
func wantTable(t *testing.T, ins []*longhaulv1.Insight) map[string]row {
	t.Helper()
	stored, err := edge.ValidateInsights(time.Now(), edge.Limits{MaxClockSkew: time.Hour}, ins)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]row{}
	for _, w := range coalesce.Collapse(stored).Winners {
		var details any
		if err := json.Unmarshal(w.In.Details, &details); err != nil {
			t.Fatal(err)
		}
		want[w.In.AccountId+"/"+w.In.Asset+"/"+w.In.Kind+"/"+w.In.Subject] = row{Severity: w.Severity, ScanID: w.In.ScanId,
			Checker: w.In.Checker, Details: details, FirstSeen: time.UnixMicro(w.FirstSeen).UTC(), LastSeen: time.UnixMicro(w.In.ObservedAtUnixMicros).UTC()}
	}
	return want
}

func compareTables(t *testing.T, what string, got, want map[string]row) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d rows, want %d", what, len(got), len(want))
	}
	bad := 0
	for k, w := range want {
		if g := got[k]; !reflect.DeepEqual(g, w) {
			if bad++; bad <= 5 {
				t.Errorf("%s: %s:\n got %+v\nwant %+v", what, k, g, w)
			}
		}
	}
}

// TestClockSkewedCheckersAndOrderOfArrival: checkers whose clocks are
// minutes off, and the same observations arriving through two edges in
// opposite orders.
//
// Pass: an observed_at minutes in the past is accepted, and last writer
// wins still keeps the latest observation whichever arrives last; one
// minutes ahead but within the edge's MaxClockSkew is accepted (and, being
// the latest observation, wins); one beyond it is refused InvalidArgument
// naming insights[i].observed_at, the whole request with it; and the
// primary's table depends only on the observations: pushing every key's
// two observations (t2 > t1, and ties) through two edges, t2 first in one
// database and t1 first in another, gives the same table, row for row,
// the one last-writer-wins computes without any clock.
//
// Not here: an edge whose own clock jumps backwards. edge.Config has no
// clock to inject, so only a test inside package edge can move it:
// edge/clock_test.go (TestEdgeClockJumpingBackwardsRegressesNothing).
func TestClockSkewedCheckersAndOrderOfArrival(t *testing.T) {
	t.Parallel()
	const skew = 2 * time.Minute
	ctx := context.Background()
	limits := func(c *edge.Config) { c.Limits.MaxClockSkew = skew }
	push := func(e *edgeNode, ins ...*longhaulv1.Insight) error {
		_, err := e.client.Push(ctx, &longhaulv1.PushRequest{Insights: ins})
		return err
	}
	var accepted, refused, rowsChecked int

	// Checkers minutes behind and ahead, through one edge.
	d := newDB(t)
	p := startPrimary(t, primary.Config{DatabaseURL: d.url})
	e := startEdge(t, "clock", p.svc.Addr(), limits)
	now := time.Now()
	var sent []*longhaulv1.Insight
	for _, step := range []struct {
		what string
		in   *longhaulv1.Insight
	}{
		// A key seen by an accurate checker, then by one 10 minutes
		// behind: the late arrival is older and loses.
		{"accurate", clockInsight("late-arrival-loses", "scan-accurate", "accurate", longhaulv1.Severity_LOW, now.Add(-time.Minute))},
		{"10m behind", clockInsight("late-arrival-loses", "scan-behind", "behind", longhaulv1.Severity_CRITICAL, now.Add(-11*time.Minute))},
		// The other way round: the checker behind first, then the
		// accurate one, whose observation is later and wins.
		{"10m behind", clockInsight("late-arrival-wins", "scan-behind", "behind", longhaulv1.Severity_CRITICAL, now.Add(-11*time.Minute))},
		{"accurate", clockInsight("late-arrival-wins", "scan-accurate", "accurate", longhaulv1.Severity_LOW, now.Add(-time.Minute))},
		// A checker a minute ahead, within the skew: accepted, and its
		// observation is the latest, so it wins over a later arrival.
		{"1m ahead", clockInsight("ahead-within-skew", "scan-ahead", "ahead", longhaulv1.Severity_HIGH, now.Add(time.Minute))},
		{"accurate", clockInsight("ahead-within-skew", "scan-accurate", "accurate", longhaulv1.Severity_LOW, now)},
	} {
		if err := push(e, step.in); err != nil {
			t.Fatalf("%s checker: %v, want it accepted", step.what, err)
		}
		accepted++
		sent = append(sent, step.in)
	}
	// Beyond the skew: refused, with the field named, and the valid
	// insight pushed with it is refused too.
	err := push(e, clockInsight("ahead-beyond-skew-company", "scan-far", "far", longhaulv1.Severity_LOW, now),
		clockInsight("ahead-beyond-skew", "scan-far", "far", longhaulv1.Severity_LOW, now.Add(skew+3*time.Minute)))
	refused++
	st := status.Convert(err)
	var field string
	for _, det := range st.Details() {
		if br, ok := det.(*errdetails.BadRequest); ok && len(br.FieldViolations) > 0 {
			field = br.FieldViolations[0].Field
		}
	}
	if st.Code() != codes.InvalidArgument || field != "insights[1].observed_at" || !strings.Contains(st.Message(), "ahead of the edge's clock") {
		t.Errorf("observed_at %v ahead (skew %v): %v, field %q; want InvalidArgument naming insights[1].observed_at", skew+3*time.Minute, skew, err, field)
	}
	waitDrained(t, drainBound, e)
	got := d.read().rows
	compareTables(t, "skewed checkers", got, wantTable(t, sent))
	rowsChecked += len(got)
	for _, k := range []string{"late-arrival-loses", "late-arrival-wins"} {
		if r := got["acme/clock.example/clock/"+k]; r.Checker != "accurate" {
			t.Errorf("%s: the row is the %s checker's, want the latest observation's (accurate)", k, r.Checker)
		}
	}
	if r := got["acme/clock.example/clock/ahead-within-skew"]; r.Checker != "ahead" {
		t.Errorf("ahead-within-skew: the row is the %s checker's, want the latest observation's (ahead)", r.Checker)
	}

	// The same observations through two edges, in opposite orders, into
	// two databases. Times far from any wall clock: days ago.
	const keys = 200
	t1 := time.Now().Add(-72 * time.Hour).Truncate(time.Microsecond)
	t2 := t1.Add(24 * time.Hour)
	var early, late []*longhaulv1.Insight
	for k := range keys {
		key := fmt.Sprintf("order-%03d", k)
		switch {
		case k%10 == 0: // a tie on observed_at: the deterministic tie-break decides
			early = append(early, clockInsight(key, "scan-x", "c1", longhaulv1.Severity_LOW, t2))
			late = append(late, clockInsight(key, "scan-y", "c2", longhaulv1.Severity_MODERATE, t2))
		default:
			early = append(early, clockInsight(key, "scan-t1", "c1", longhaulv1.Severity(1+k%4), t1.Add(time.Duration(k)*time.Second)))
			late = append(late, clockInsight(key, "scan-t2", "c2", longhaulv1.Severity(1+(k+1)%4), t2.Add(time.Duration(k)*time.Second)))
		}
	}
	tables := make([]map[string]row, 2)
	for i, order := range [][2][]*longhaulv1.Insight{{late, early}, {early, late}} {
		d := newDB(t)
		p := startPrimary(t, primary.Config{DatabaseURL: d.url})
		a := startEdge(t, fmt.Sprint("order-a-", i), p.svc.Addr(), limits)
		b := startEdge(t, fmt.Sprint("order-b-", i), p.svc.Addr(), limits)
		// The first observations through edge a, applied; then the
		// others through edge b.
		for j, ed := range []*edgeNode{a, b} {
			for chunk := 0; chunk < keys; chunk += 50 {
				if err := push(ed, order[j][chunk:chunk+50]...); err != nil {
					t.Fatal(err)
				}
				accepted += 50
			}
			waitDrained(t, drainBound, ed)
		}
		tables[i] = d.read().rows
		rowsChecked += len(tables[i])
	}
	want := wantTable(t, append(append([]*longhaulv1.Insight(nil), early...), late...))
	compareTables(t, "t2 first, then t1", tables[0], want)
	compareTables(t, "t1 first, then t2", tables[1], want)
	t.Logf("faults: clocks: %d insights accepted from checkers up to 11m behind and 1m ahead (skew %v), %d pushes refused beyond the skew, "+
		"%d keys pushed in both orders through 2 edges into 2 databases, %d rows checked",
		accepted, skew, refused, keys, rowsChecked)
}
