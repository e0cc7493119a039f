package writepath

import (
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/primary"
)

// scan is one scan of the workload: n insights with the keys numbered from
// offset, so that the scans of a workload never share a key and every
// strategy has exactly Config.Rows rows to make visible.
type scan struct {
	id     string
	offset int
	n      int
	big    bool
	// spread is this scan's scan time as a share of Config.ScanTime (small
	// scans; 1 for big ones): drawn uniformly from [0.5, 1.5) once per
	// workload, so that every strategy scans the same times and checkers
	// that start together do not stay in step (real scans vary).
	spread float64
}

// schedule lays the workload out in the order the checkers take it: the big
// scans spread evenly through the small ones, the first scan a big one.
func schedule(c Config) []scan {
	total := c.Scans + c.BigScans
	out := make([]scan, 0, total)
	offset, big := 0, 0
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range total {
		s := scan{id: fmt.Sprintf("writepath-%06d", i), offset: offset, n: c.PerScan, spread: 0.5 + rng.Float64()}
		// Scan i is big when it is the next big scan's turn: big scan j goes
		// at position ⌊j·total/BigScans⌋.
		if big < c.BigScans && i >= big*total/c.BigScans {
			s.n, s.big, s.spread = c.Insights, true, 1
			big++
		}
		offset += s.n
		out = append(out, s)
	}
	return out
}

// batchRows are a scan's insights as the seed's API wrote them.
func batchRows(s scan, c Config, observed time.Time) []*longhaulv1.BatchInsight {
	return primary.Synthetic(s.n, s.offset, c.DetailsBytes, observed, s.id)
}

// insights are the same insights as a checker pushes them to an edge, their
// details as JSON text (details_json), as checker.Checker sends them.
func insights(rows []*longhaulv1.BatchInsight) []*longhaulv1.Insight {
	out := make([]*longhaulv1.Insight, len(rows))
	for i, r := range rows {
		out[i] = &longhaulv1.Insight{
			AccountId: r.AccountId, Asset: r.Asset, Kind: r.Kind, Subject: r.Subject, Severity: r.Severity,
			DetailsJson: string(r.Details), ObservedAt: timestamppb.New(time.UnixMicro(r.ObservedAtUnixMicros)),
			ScanId: r.ScanId, Checker: r.Checker,
		}
	}
	return out
}
