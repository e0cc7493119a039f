// Package coalesce holds last-writer-wins for insights in one place: the
// order the primary's upsert uses, and the collapse of a batch to one winner
// per key that both the edge (before shipping) and the primary (before
// writing) perform.
//
// The order is total, so any batching and any order of application give the
// same winner: greater observed_at wins; on a tie, greater severity text,
// then scan_id, then checker (byte-wise), then the FNV-64a hash of the
// details bytes.
package coalesce

import (
	"cmp"
	"hash/fnv"
	"slices"
	"strings"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// SeverityText maps the wire enum to the text the insights table holds. An
// unknown value maps to its number, which the table refuses.
func SeverityText(s longhaulv1.Severity) string {
	switch s {
	case longhaulv1.Severity_LOW:
		return "low"
	case longhaulv1.Severity_MODERATE:
		return "moderate"
	case longhaulv1.Severity_HIGH:
		return "high"
	case longhaulv1.Severity_CRITICAL:
		return "critical"
	}
	return s.String()
}

// DetailsHash is the last tie-break: FNV-64a of the details bytes as sent.
func DetailsHash(details []byte) int64 {
	h := fnv.New64a()
	h.Write(details)
	return int64(h.Sum64())
}

// CompareKey orders insights by key (account_id, asset, kind, subject).
func CompareKey(a, b *longhaulv1.BatchInsight) int {
	if c := strings.Compare(a.AccountId, b.AccountId); c != 0 {
		return c
	}
	if c := strings.Compare(a.Asset, b.Asset); c != 0 {
		return c
	}
	if c := strings.Compare(a.Kind, b.Kind); c != 0 {
		return c
	}
	return strings.Compare(a.Subject, b.Subject)
}

// Obs is one observation with what last-writer-wins compares precomputed.
type Obs struct {
	In       *longhaulv1.BatchInsight
	Severity string
	Hash     int64
	// FirstSeen is the earliest observed_at of the key among the
	// observations collapsed into this one (unix micros).
	FirstSeen int64
	// Index is the observation's position in Collapse's input.
	Index int
}

// NewObs precomputes what Compare needs of in.
func NewObs(in *longhaulv1.BatchInsight) Obs {
	first := in.ObservedAtUnixMicros
	if f := in.FirstSeenUnixMicros; f != 0 && f < first {
		first = f // an edge collapsed earlier observations into this one
	}
	return Obs{In: in, Severity: SeverityText(in.Severity), Hash: DetailsHash(in.Details), FirstSeen: first}
}

// Compare orders two observations of one key: the greater wins.
func Compare(a, b Obs) int {
	if c := cmp.Compare(a.In.ObservedAtUnixMicros, b.In.ObservedAtUnixMicros); c != 0 {
		return c
	}
	if c := strings.Compare(a.Severity, b.Severity); c != 0 {
		return c
	}
	if c := strings.Compare(a.In.ScanId, b.In.ScanId); c != 0 {
		return c
	}
	if c := strings.Compare(a.In.Checker, b.In.Checker); c != 0 {
		return c
	}
	return cmp.Compare(a.Hash, b.Hash)
}

// Tally is, for one scan, how many distinct keys a run of observations held
// and the earliest time among them.
type Tally struct {
	ScanID      string
	Count       int64
	MinObserved int64 // unix micros
}

// Result is a collapsed run of observations.
type Result struct {
	// Winners, one per key, sorted by key.
	Winners []Obs
	// Tallies per scan, sorted by scan id, counted before collapsing: a scan
	// counts each key it observed once.
	Tallies []Tally
	// Dropped is the number of observations collapsed into a winner.
	Dropped int
}

// Collapse keeps the winner of each key among ins.
func Collapse(ins []*longhaulv1.BatchInsight) Result {
	obs := make([]Obs, len(ins))
	for i, in := range ins {
		obs[i] = NewObs(in)
		obs[i].Index = i
	}
	slices.SortFunc(obs, func(a, b Obs) int {
		if c := CompareKey(a.In, b.In); c != 0 {
			return c
		}
		return Compare(b, a) // winner first
	})

	r := Result{Winners: obs[:0]} // the winners overwrite obs in place
	counts := map[string]*Tally{}
	count := func(in *longhaulv1.BatchInsight) {
		t := counts[in.ScanId]
		if t == nil {
			t = &Tally{ScanID: in.ScanId, MinObserved: in.ObservedAtUnixMicros}
			counts[in.ScanId] = t
		}
		t.Count++
		t.MinObserved = min(t.MinObserved, in.ObservedAtUnixMicros)
	}
	// seen notes an observation of a key its scan has already counted.
	seen := func(in *longhaulv1.BatchInsight) {
		t := counts[in.ScanId]
		t.MinObserved = min(t.MinObserved, in.ObservedAtUnixMicros)
	}
	for i := 0; i < len(obs); {
		j := i + 1
		for j < len(obs) && CompareKey(obs[i].In, obs[j].In) == 0 {
			j++
		}
		w := obs[i]
		count(w.In)
		// A scan counts a key once, however often the run holds it.
		var scans map[string]bool
		if j-i > 8 {
			scans = map[string]bool{w.In.ScanId: true}
		}
	next:
		for k := i + 1; k < j; k++ {
			in := obs[k].In
			w.FirstSeen = min(w.FirstSeen, obs[k].FirstSeen)
			if scans != nil {
				if scans[in.ScanId] {
					seen(in)
					continue
				}
				scans[in.ScanId] = true
			} else {
				for m := i; m < k; m++ {
					if obs[m].In.ScanId == in.ScanId {
						seen(in)
						continue next
					}
				}
			}
			count(in)
		}
		r.Dropped += j - i - 1
		r.Winners = append(r.Winners, w)
		i = j
	}
	r.Tallies = SortedTallies(counts)
	return r
}

// SortedTallies returns the tallies of m sorted by scan id.
func SortedTallies(m map[string]*Tally) []Tally {
	out := make([]Tally, 0, len(m))
	for _, t := range m {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b Tally) int { return strings.Compare(a.ScanID, b.ScanID) })
	return out
}
