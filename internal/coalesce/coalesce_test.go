package coalesce

import (
	"testing"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

func obs(subject, scan string, at int64) *longhaulv1.BatchInsight {
	return &longhaulv1.BatchInsight{AccountId: "a", Asset: "x", Kind: "k", Subject: subject, Severity: longhaulv1.Severity_LOW,
		Details: []byte(`{}`), ObservedAtUnixMicros: at, ScanId: scan, Checker: "c"}
}

func TestCollapse(t *testing.T) {
	r := Collapse([]*longhaulv1.BatchInsight{
		obs("s1", "scan-1", 30), obs("s1", "scan-1", 10), obs("s1", "scan-2", 20), // one key, two scans
		obs("s2", "scan-1", 5),
	})
	if len(r.Winners) != 2 || r.Dropped != 2 {
		t.Fatalf("%d winners, %d dropped; want 2, 2", len(r.Winners), r.Dropped)
	}
	if w := r.Winners[0]; w.In.Subject != "s1" || w.In.ObservedAtUnixMicros != 30 || w.FirstSeen != 10 {
		t.Errorf("winner of s1 = %+v, want the observation at 30 first seen at 10", w)
	}
	want := []Tally{{ScanID: "scan-1", Count: 2, MinObserved: 5}, {ScanID: "scan-2", Count: 1, MinObserved: 20}}
	if len(r.Tallies) != 2 || r.Tallies[0] != want[0] || r.Tallies[1] != want[1] {
		t.Errorf("tallies %+v, want %+v", r.Tallies, want)
	}
	// The earliest observation of a scan counts even when it lost.
	r = Collapse([]*longhaulv1.BatchInsight{obs("s1", "scan-1", 30), obs("s1", "scan-1", 3)})
	if r.Tallies[0].MinObserved != 3 || r.Tallies[0].Count != 1 {
		t.Errorf("tally %+v, want count 1 from 3", r.Tallies[0])
	}
}

func TestCompareIsTotal(t *testing.T) {
	a, b := NewObs(obs("s", "scan-1", 1)), NewObs(obs("s", "scan-1", 1))
	b.In.Details = []byte(`{"x":1}`)
	b = NewObs(b.In)
	if Compare(a, b) == 0 || Compare(a, b) != -Compare(b, a) {
		t.Errorf("observations differing only in details compare %d / %d", Compare(a, b), Compare(b, a))
	}
}
