package primary

import (
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/coalesce"
)

// row is one insight ready to be written: the winner of its key within the
// batch, with the earliest observation of the key in the batch.
type row = coalesce.Obs

// prepared is a batch made ready for PostgreSQL: duplicates collapsed, rows
// sorted by key so concurrent batches lock rows in the same order.
type prepared struct {
	rows    []row
	tallies []coalesce.Tally
	dropped int // observations collapsed into a winner
}

// prepare collapses the insights of a batch. The batch's own tallies, when
// the edge sent them (it counted before coalescing), replace the ones
// counted here.
func prepare(ins []*longhaulv1.BatchInsight, given []*longhaulv1.ScanTally) prepared {
	c := coalesce.Collapse(ins)
	p := prepared{rows: c.Winners, tallies: c.Tallies, dropped: c.Dropped}
	if len(given) > 0 {
		counts := map[string]*coalesce.Tally{}
		for _, t := range given {
			c := counts[t.ScanId]
			if c == nil {
				counts[t.ScanId] = &coalesce.Tally{ScanID: t.ScanId, Count: t.Count, MinObserved: t.MinObservedAtUnixMicros}
				continue
			}
			c.Count += t.Count
			c.MinObserved = min(c.MinObserved, t.MinObservedAtUnixMicros)
		}
		p.tallies = coalesce.SortedTallies(counts)
	}
	return p
}

// columns holds rows as the column arrays UNNEST and COPY take.
type columns struct {
	account, asset, kind, subject, severity, scanID, checker []string
	details                                                  [][]byte
	firstSeen, lastSeen                                      []time.Time
	hash                                                     []int64
}

func toColumns(rows []row) *columns {
	n := len(rows)
	c := &columns{
		account: make([]string, n), asset: make([]string, n), kind: make([]string, n), subject: make([]string, n),
		severity: make([]string, n), scanID: make([]string, n), checker: make([]string, n),
		details: make([][]byte, n), firstSeen: make([]time.Time, n), lastSeen: make([]time.Time, n), hash: make([]int64, n),
	}
	for i, r := range rows {
		c.account[i], c.asset[i], c.kind[i], c.subject[i] = r.In.AccountId, r.In.Asset, r.In.Kind, r.In.Subject
		c.severity[i], c.scanID[i], c.checker[i] = r.Severity, r.In.ScanId, r.In.Checker
		c.details[i] = r.In.Details
		c.firstSeen[i] = time.UnixMicro(r.FirstSeen)
		c.lastSeen[i] = time.UnixMicro(r.In.ObservedAtUnixMicros)
		c.hash[i] = r.Hash
	}
	return c
}
