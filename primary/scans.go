package primary

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/longhaul/longhaul/internal/coalesce"
)

// scans records the batch's per-scan progress and completions, then
// resolves the insights of every scan that became ready: its completion
// has arrived and all of its insights are applied.
func (w *writer) scans(ctx context.Context, tallies []coalesce.Tally) (int, error) {
	touched := make([]string, 0, len(tallies)+len(w.batch.Completions))
	if len(tallies) > 0 {
		ids := make([]string, len(tallies))
		counts := make([]int64, len(tallies))
		mins := make([]time.Time, len(tallies))
		for i, t := range tallies {
			ids[i], counts[i], mins[i] = t.ScanID, t.Count, time.UnixMicro(t.MinObserved)
		}
		if _, err := w.tx.Exec(ctx, sqlTallies, ids, counts, mins); err != nil {
			return 0, fmt.Errorf("primary: scan progress: %w", err)
		}
		touched = append(touched, ids...)
	}
	if cs := w.batch.Completions; len(cs) > 0 {
		n := len(cs)
		ids, accounts, assets, checkers := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		counts := make([]int64, n)
		started, finished := make([]*time.Time, n), make([]*time.Time, n)
		for i, c := range cs {
			ids[i], accounts[i], assets[i], checkers[i], counts[i] = c.ScanId, c.AccountId, c.Asset, c.Checker, c.InsightCount
			if c.StartedAt != nil {
				t := c.StartedAt.AsTime()
				started[i] = &t
			}
			if c.FinishedAt != nil {
				t := c.FinishedAt.AsTime()
				finished[i] = &t
			}
		}
		if _, err := w.tx.Exec(ctx, sqlCompletions, ids, accounts, assets, checkers, counts, started, finished); err != nil {
			return 0, fmt.Errorf("primary: scan completions: %w", err)
		}
		touched = append(touched, ids...)
	}
	if len(touched) == 0 {
		return 0, nil
	}
	rows, err := w.tx.Query(ctx, sqlReadyScans, touched)
	if err != nil {
		return 0, fmt.Errorf("primary: find ready scans: %w", err)
	}
	type ready struct {
		scanID, account, asset, checker string
		asOf                            time.Time
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ready, error) {
		var s ready
		err := r.Scan(&s.scanID, &s.account, &s.asset, &s.checker, &s.asOf)
		return s, err
	})
	if err != nil {
		return 0, fmt.Errorf("primary: find ready scans: %w", err)
	}
	total := 0
	for _, s := range list {
		tag, err := w.tx.Exec(ctx, sqlResolve, s.account, s.asset, s.checker, s.scanID, s.asOf)
		if err != nil {
			return 0, fmt.Errorf("primary: resolve scan %q: %w", s.scanID, err)
		}
		if _, err := w.tx.Exec(ctx, sqlScanResolved, s.scanID, tag.RowsAffected()); err != nil {
			return 0, fmt.Errorf("primary: mark scan %q resolved: %w", s.scanID, err)
		}
		total += int(tag.RowsAffected())
	}
	return total, nil
}
