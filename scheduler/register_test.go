package scheduler

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestRegisterOverHTTP: 1,000 assets across the plans registered in one
// request get their first scan within their plan's interval, spread over
// it; registering again updates plan and checks, clamps the next scan to
// the new plan's interval, and leaves unchanged assets alone.
func TestRegisterOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t, true, Config{})
	iv := b.svc.cfg.Intervals
	assets := makeAssets("acme", "a", 1000, Plans...)
	body, err := json.Marshal(map[string]any{"assets": assets})
	if err != nil {
		t.Fatal(err)
	}
	var got registered
	if code := b.post(t, "/v1/assets", body, &got); code != 200 || got != (registered{Assets: 1000, Created: 1000}) {
		t.Fatalf("register: %d %+v, want 200 and 1000 created", code, got)
	}

	// Spread: each quarter of each plan's interval holds some of its 250
	// first scans (about 62 each; fewer than 20 is all but impossible).
	rows, err := b.pool.Query(b.ctx, `SELECT plan, next_scan_at FROM assets`)
	if err != nil {
		t.Fatal(err)
	}
	quarters := map[Plan]*[4]int{}
	n := 0
	for rows.Next() {
		var plan string
		var next time.Time
		if err := rows.Scan(&plan, &next); err != nil {
			t.Fatal(err)
		}
		p := Plan(plan)
		off := next.Sub(t0)
		if off < 0 || off >= iv[p] {
			t.Errorf("%s asset: first scan %v after registering, want within [0, %v)", p, off, iv[p])
			continue
		}
		if quarters[p] == nil {
			quarters[p] = new([4]int)
		}
		quarters[p][off*4/iv[p]]++
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 1000 {
		t.Fatalf("%d assets in the table, want 1000", n)
	}
	for _, p := range Plans {
		for q, c := range quarters[p] {
			if c < 20 {
				t.Errorf("%s: %d first scans in quarter %d of the interval, want them spread (%v)", p, c, q, *quarters[p])
			}
		}
	}

	// Again, a day later: 100 free assets become enterprise (next scan
	// clamped to a day), 50 get other checks, the rest is unchanged.
	b.clock.Advance(24 * time.Hour)
	again := makeAssets("acme", "a", 1000, Plans...)
	var upgraded, rechecked []string
	for i := range again {
		switch {
		case again[i].Plan == PlanFree && len(upgraded) < 100:
			again[i].Plan = PlanEnterprise
			upgraded = append(upgraded, again[i].Asset)
		case again[i].Plan == PlanPro && len(rechecked) < 50:
			again[i].Checks = []string{"tls"}
			rechecked = append(rechecked, again[i].Asset)
		}
	}
	// Free assets whose next scan is more than 7 days after now are not
	// possible (registered a day ago), so only plan and checks changes
	// count as updates.
	body, _ = json.Marshal(map[string]any{"assets": again})
	got = registered{}
	if code := b.post(t, "/v1/assets", body, &got); code != 200 || got != (registered{Assets: 1000, Updated: 150, Unchanged: 850}) {
		t.Fatalf("register again: %d %+v, want 150 updated, 850 unchanged", code, got)
	}
	now := b.clock.Now()
	if late := b.count(t, `SELECT count(*) FROM assets WHERE asset = ANY($1) AND (plan <> 'enterprise' OR next_scan_at > $2)`,
		upgraded, now.Add(iv[PlanEnterprise])); late != 0 {
		t.Errorf("%d upgraded assets not enterprise or scanned later than a day from now", late)
	}
	if bad := b.count(t, `SELECT count(*) FROM assets WHERE asset = ANY($1) AND checks <> '{tls}'`, rechecked); bad != 0 {
		t.Errorf("%d assets kept their old checks", bad)
	}
	if moved := b.count(t, `SELECT count(*) FROM assets WHERE updated_at > $1`, t0); moved != 150 {
		t.Errorf("%d rows written, want the 150 changed", moved)
	}
}

// TestRegisterAssetsRefusesBadInputWhole: one bad asset and nothing is
// written; the error names its index and field.
func TestRegisterAssetsRefusesBadInputWhole(t *testing.T) {
	t.Parallel()
	b := setup(t, true, Config{})
	assets := makeAssets("acme", "a", 10)
	assets[7].Checks = []string{"tls", "tls"}
	_, _, err := RegisterAssets(b.ctx, b.pool, assets, t0, nil)
	var ie *InputError
	if !errors.As(err, &ie) || ie.Path() != "assets[7].checks[1]" {
		t.Fatalf("err %v, want an InputError at assets[7].checks[1]", err)
	}
	assets[7].Checks = []string{"tls"}
	assets[9].Asset = assets[2].Asset
	if _, _, err := RegisterAssets(b.ctx, b.pool, assets, t0, nil); !errors.As(err, &ie) || ie.Path() != "assets[9].asset" {
		t.Fatalf("err %v, want an InputError at assets[9].asset", err)
	}
	if n := b.count(t, `SELECT count(*) FROM assets`); n != 0 {
		t.Fatalf("%d assets written, want none", n)
	}
}

// TestImportJSONLines: batches of 3; blank lines skipped; a later line
// wins; a bad line stops the import with its line number and field, after
// the batches before it were written.
func TestImportJSONLines(t *testing.T) {
	t.Parallel()
	b := setup(t, true, Config{})
	line := func(asset, plan string) string {
		return fmt.Sprintf(`{"account_id":"acme","asset":%q,"plan":%q,"checks":["tls"]}`, asset, plan)
	}
	good := strings.Join([]string{
		line("a", "free"), line("b", "free"), "", line("c", "pro"),
		line("d", "free"), line("d", "enterprise"), // d: the later line wins
		line("e", "business"), "   ", line("f", "free"),
	}, "\n") + "\n"
	st, err := ImportJSONLines(b.ctx, b.pool, strings.NewReader(good), 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Lines != 9 || st.Assets != 7 || st.Created != 6 || st.Batches != 2 || st.Written != 9 {
		t.Errorf("stats %+v, want 9 lines, 7 assets, 6 created, 2 batches, all written", st)
	}
	if n := b.count(t, `SELECT count(*) FROM assets WHERE asset = 'd' AND plan = 'enterprise'`); n != 1 {
		t.Errorf("asset d: the later line did not win")
	}

	bad := strings.Join([]string{
		line("g", "free"), line("h", "free"), line("i", "free"), // batch 1: written
		line("j", "free"), `{"account_id":"acme","asset":"k","plan":"gold","checks":["tls"]}`,
	}, "\n")
	st, err = ImportJSONLines(b.ctx, b.pool, strings.NewReader(bad), 3, nil)
	var ie *InputError
	if !errors.As(err, &ie) || err.Error() != `line 5: plan: unknown plan "gold": want free, pro, business or enterprise` {
		t.Fatalf("err %v, want line 5's plan named", err)
	}
	if st.Written != 3 || st.Batches != 1 {
		t.Errorf("stats %+v, want the first 3 lines written in 1 batch", st)
	}
	if n := b.count(t, `SELECT count(*) FROM assets WHERE asset IN ('g', 'h', 'i', 'j', 'k')`); n != 3 {
		t.Errorf("%d of g…k written, want g, h, i", n)
	}

	long := `{"account_id":"acme","asset":"` + strings.Repeat("x", MaxImportLine) + `"}`
	if _, err := ImportJSONLines(b.ctx, b.pool, strings.NewReader(line("l", "free")+"\n"+long), 0, nil); !errors.As(err, &ie) || ie.Line != 2 {
		t.Fatalf("err %v, want line 2 too long", err)
	}
}
