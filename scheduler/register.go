package scheduler

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// DB is what RegisterAssets and ImportJSONLines write through: a
// *pgxpool.Pool, a *pgx.Conn or a pgx.Tx.
type DB interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// RegisterAssets validates assets and upserts them in one statement.
//
// A new asset's first scan is at a random time within its plan's interval
// after now, so assets registered together are not scanned together.
// Registering an asset again sets its plan and checks and keeps its next
// scan, but no later than one interval of the new plan after now. Created
// counts the new assets; updated those whose plan, checks or next scan
// changed (the others are left untouched).
//
// Nothing is written when an asset is invalid or listed twice: the error is
// an *InputError naming the first one (its Index) and field. intervals may
// be nil (DefaultIntervals); plans it leaves out keep their default.
func RegisterAssets(ctx context.Context, db DB, assets []Asset, now time.Time, intervals Intervals) (created, updated int, err error) {
	if len(assets) == 0 {
		return 0, 0, nil
	}
	intervals = intervals.withDefaults()
	if err := intervals.validate(); err != nil {
		return 0, 0, err
	}
	seen := make(map[[2]string]int, len(assets))
	for i := range assets {
		if ierr := assets[i].validate(); ierr != nil {
			ierr.Index = i
			return 0, 0, ierr
		}
		k := [2]string{assets[i].AccountID, assets[i].Asset}
		if prev, dup := seen[k]; dup {
			return 0, 0, &InputError{Index: i, Field: "asset", Reason: fmt.Sprintf("duplicate of assets[%d] (same account_id and asset)", prev)}
		}
		seen[k] = i
	}
	// In key order, so concurrent registrations lock rows in the same order
	// and do not deadlock.
	order := make([]int, len(assets))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(strings.Compare(assets[a].AccountID, assets[b].AccountID), strings.Compare(assets[a].Asset, assets[b].Asset))
	})
	n := len(assets)
	accounts, names, plans, checks := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	first := make([]time.Time, n)
	for k, i := range order {
		a := &assets[i]
		accounts[k], names[k], plans[k] = a.AccountID, a.Asset, string(a.Plan)
		checks[k] = strings.Join(a.Checks, ",")
		first[k] = now.Add(rand.N(intervals[a.Plan]))
	}
	rows, err := db.Query(ctx, sqlRegister, accounts, names, plans, checks, first, now,
		intervals[PlanFree].Microseconds(), intervals[PlanPro].Microseconds(),
		intervals[PlanBusiness].Microseconds(), intervals[PlanEnterprise].Microseconds())
	if err != nil {
		return 0, 0, fmt.Errorf("scheduler: register assets: %w", err)
	}
	inserted, err := pgx.CollectRows(rows, pgx.RowTo[bool])
	if err != nil {
		return 0, 0, fmt.Errorf("scheduler: register assets: %w", err)
	}
	for _, ins := range inserted {
		if ins {
			created++
		} else {
			updated++
		}
	}
	return created, updated, nil
}

// DefaultImportBatch is the number of assets ImportJSONLines writes per
// statement when given no batch size.
const DefaultImportBatch = 5000

// ImportStats is what an import did.
type ImportStats struct {
	// Lines read, blank ones included; Assets the asset lines among them.
	Lines, Assets int
	// Written is the number of lines whose assets are all written: on an
	// error, import again from the line after it.
	Written int
	// Batches written; Created and Updated as RegisterAssets counts them.
	Batches, Created, Updated int
}

// ImportJSONLines registers the assets of r, one JSON object a line (the
// objects of POST /v1/assets), batch at a time (default
// DefaultImportBatch), each batch with RegisterAssets. Blank lines are
// skipped. When an asset is listed twice, the later line wins.
//
// Each batch is all or nothing, the import as a whole is not: on a bad line
// (an *InputError naming the line and field) or a failed batch, the batches
// before it stay written and the returned stats say up to which line
// (Written); fix the line and import again (registering is idempotent).
func ImportJSONLines(ctx context.Context, db DB, r io.Reader, batch int, intervals Intervals) (ImportStats, error) {
	if batch <= 0 {
		batch = DefaultImportBatch
	}
	var (
		st      ImportStats
		pending []Asset
		at      = map[[2]string]int{} // position in pending
	)
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		c, u, err := RegisterAssets(ctx, db, pending, time.Now(), intervals)
		if err != nil {
			return fmt.Errorf("batch %d (up to line %d): %w", st.Batches+1, st.Lines, err)
		}
		st.Batches++
		st.Created += c
		st.Updated += u
		st.Written = st.Lines
		pending = pending[:0]
		clear(at)
		return nil
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxImportLine)
	for sc.Scan() {
		st.Lines++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		a, err := decodeAssetLine(line, st.Lines)
		if err != nil {
			return st, err
		}
		st.Assets++
		k := [2]string{a.AccountID, a.Asset}
		if i, dup := at[k]; dup {
			pending[i] = a
			continue
		}
		at[k] = len(pending)
		pending = append(pending, a)
		if len(pending) >= batch {
			if err := flush(); err != nil {
				return st, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return st, &InputError{Line: st.Lines + 1, Index: -1, Reason: fmt.Sprintf("longer than %d bytes", MaxImportLine)}
		}
		return st, fmt.Errorf("scheduler: import: read: %w", err)
	}
	if err := flush(); err != nil {
		return st, err
	}
	st.Written = st.Lines
	return st, nil
}
