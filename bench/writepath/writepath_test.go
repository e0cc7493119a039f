package writepath

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/wan"
)

func TestMain(m *testing.M) { pgtest.Main(m, wan.LeakOptions()...) }

// tiny is a workload of a few seconds on the tests' server: 20 small scans
// and one big enough for the COPY path, per_row extrapolated from 40 rows.
func tiny(t *testing.T) Config {
	c := Default()
	c.DatabaseURL = pgtest.Database(t)
	c.RTT = 10 * time.Millisecond
	c.Scans, c.PerScan, c.BigScans, c.Insights = 20, 5, 1, 1500
	c.Concurrency, c.Pool, c.Sample = 4, 2, 40
	return c
}

func TestRun(t *testing.T) {
	t.Parallel()
	cfg := tiny(t)
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}

	raw, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("the result is not one JSON object of objects: %v\n%s", err, raw)
	}
	for _, name := range Strategies {
		s, ok := doc[name]
		if !ok {
			t.Fatalf("no entry %q in %s", name, raw)
		}
		for _, key := range []string{"blocked_seconds", "visible_seconds", "scans_per_second", "push_p99_seconds"} {
			if v, ok := s[key].(float64); !ok || v <= 0 {
				t.Errorf("%s.%s = %v, want a positive number", name, key, s[key])
			}
		}
		if got, want := s["extrapolated"], name == PerRow; got != want {
			t.Errorf("%s.extrapolated = %v, want %v", name, got, want)
		}
	}
	if _, ok := doc["goals"]["blocked"]; !ok {
		t.Errorf("no goals in %s", raw)
	}

	if res.PerRow.RowsWritten != int64(cfg.Sample) || res.PerRow.Sample == nil || res.PerRow.Sample.Rows != cfg.Sample {
		t.Errorf("per_row wrote %d rows (sample %+v), want its sample of %d", res.PerRow.RowsWritten, res.PerRow.Sample, cfg.Sample)
	}
	for _, s := range []*Strategy{res.Direct, res.Longhaul} {
		if s.Rows != 1600 || s.RowsWritten != s.Rows {
			t.Errorf("%s wrote %d of %d rows, want 1,600", s.Name, s.RowsWritten, s.Rows)
		}
		if s.Scans != 21 {
			t.Errorf("%s: %d scans, want 21", s.Name, s.Scans)
		}
	}
	if d := res.Direct; d.VisibleSeconds != d.WriteSeconds || d.ScansPerSecondRatio != 1 {
		t.Errorf("direct: visible %v, last write %v, ratio to itself %v", d.VisibleSeconds, d.WriteSeconds, d.ScansPerSecondRatio)
	}
	if l := res.Longhaul; l.VisibleSeconds < l.WriteSeconds {
		t.Errorf("longhaul: all visible after %vs, before its last push returned (%vs)", l.VisibleSeconds, l.WriteSeconds)
	}
	// One statement costs a round trip at least, and the per-row design
	// holds a connection for 7 of them per small scan.
	if p := res.PerRow; p.Sample.StatementSeconds < cfg.RTT.Seconds() || p.BlockedSeconds <= res.Direct.BlockedSeconds {
		t.Errorf("per_row: %vs a statement, %vs blocked (direct %vs)", p.Sample.StatementSeconds, p.BlockedSeconds, res.Direct.BlockedSeconds)
	}

	var table bytes.Buffer
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"20 small scans of 5 insights + 1 big scan of 1,500", "per_row *", "extrapolated", "direct", "longhaul", "goals"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, table.String())
		}
	}
	noSchemasLeft(t, cfg.DatabaseURL)
}

// TestRunPerRowMeasured: a workload no larger than the sample is measured,
// not extrapolated.
func TestRunPerRowMeasured(t *testing.T) {
	t.Parallel()
	cfg := tiny(t)
	cfg.Scans, cfg.BigScans, cfg.Sample = 10, 0, 100
	cfg.Strategies = []string{PerRow}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := res.PerRow
	if p == nil || res.Direct != nil || res.Longhaul != nil || res.Goals != nil {
		t.Fatalf("ran %+v, want per_row alone", res)
	}
	if p.Extrapolated || p.Sample != nil || p.RowsWritten != 50 || p.Scans != 10 {
		t.Errorf("per_row: extrapolated %v, sample %+v, %d rows in %d scans; want 50 rows measured in 10 scans", p.Extrapolated, p.Sample, p.RowsWritten, p.Scans)
	}
	if p.ScansPerSecondRatio != 0 {
		t.Errorf("a ratio to direct (%v) without direct", p.ScansPerSecondRatio)
	}
	noSchemasLeft(t, cfg.DatabaseURL)
}

// TestRunCancelled: a run whose context ends stops, cleans up and says why.
func TestRunCancelled(t *testing.T) {
	t.Parallel()
	cfg := tiny(t)
	cfg.RTT = 200 * time.Millisecond
	cfg.Strategies = []string{Direct, Longhaul}
	ctx, cancel := context.WithCancel(context.Background())
	cfg.Progress = func(phase string, done, _ int) {
		if strings.HasPrefix(phase, "direct") && done > 0 {
			cancel()
		}
	}
	_, err := Run(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), context.Canceled.Error()) {
		t.Fatalf("Run after cancel: %v, want context.Canceled", err)
	}
	noSchemasLeft(t, cfg.DatabaseURL)
}

func noSchemasLeft(t *testing.T, url string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'writepath\_%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d writepath schemas left behind", n)
	}
}

func TestSchedule(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Scans, c.PerScan, c.BigScans, c.Insights = 6, 5, 2, 100
	s := schedule(c)
	var big []int
	offset := 0
	for i, sc := range s {
		if sc.big {
			big = append(big, i)
		}
		if sc.offset != offset {
			t.Errorf("scan %d starts at key %d, want %d", i, sc.offset, offset)
		}
		offset += sc.n
	}
	if len(s) != 8 || len(big) != 2 || big[0] != 0 || big[1] != 4 || int64(offset) != c.Rows() {
		t.Errorf("schedule: %d scans, big ones at %v, %d keys; want 8, [0 4], %d", len(s), big, offset, c.Rows())
	}
	c.Scans = 0
	if s := schedule(c); len(s) != 2 || !s[0].big || !s[1].big {
		t.Errorf("big scans only: %+v", s)
	}
}

func TestSimulate(t *testing.T) {
	t.Parallel()
	sec := time.Second
	scans := []scan{{n: 1}, {n: 1}, {n: 1}}
	noScan := func(scan) time.Duration { return 0 }
	for _, tc := range []struct {
		name          string
		pool          int
		scanTime      func(scan) time.Duration
		scans         []scan
		want          []call
		blocked, busy float64
	}{
		// One connection, two checkers: calls of 3 statements queue for it.
		{"one connection", 1, noScan, scans, []call{{0, 3 * sec, 3 * sec}, {0, 6 * sec, 6 * sec}, {3 * sec, 9 * sec, 6 * sec}}, 15, 15},
		// As many connections as checkers: nobody waits.
		{"two connections", 2, noScan, scans, []call{{0, 3 * sec, 3 * sec}, {0, 3 * sec, 3 * sec}, {3 * sec, 6 * sec, 3 * sec}}, 9, 9},
		// Scanning 2s before each call: the checker takes its next scan
		// when its call ends, and is blocked from its request.
		{"scanning", 1, func(scan) time.Duration { return 2 * sec }, scans,
			[]call{{0, 5 * sec, 3 * sec}, {0, 8 * sec, 6 * sec}, {5 * sec, 11 * sec, 4 * sec}}, 13, 19},
		// A big scan taken first asks last: first come, first served by
		// the time of the request, not of the taking.
		{"big scan asks last", 1, func(s scan) time.Duration {
			if s.big {
				return 10 * sec
			}
			return 0
		}, []scan{{n: 1, big: true}, {n: 1}}, []call{{0, 13 * sec, 3 * sec}, {0, 3 * sec, 3 * sec}}, 6, 16},
	} {
		got := simulate(tc.scans, 2, tc.pool, sec, tc.scanTime)
		for i := range tc.want {
			if got[i] != tc.want[i] {
				t.Errorf("%s: call %d = %v, want %v", tc.name, i, got[i], tc.want[i])
			}
		}
		var s Strategy
		figures(&s, got, lastEnd(got))
		if s.BlockedSeconds != tc.blocked || s.CheckerSeconds != tc.busy {
			t.Errorf("%s: blocked %vs of %vs, want %vs of %vs", tc.name, s.BlockedSeconds, s.CheckerSeconds, tc.blocked, tc.busy)
		}
		if tc.name == "two connections" && (s.WriteSeconds != 6 || s.ScansPerSecond != 0.5 || s.PushP99Seconds != 3 || s.BlockedShare != 1) {
			t.Errorf("figures: %+v", s)
		}
	}
}

// TestRunScanning: checkers that scan before they write. Blocked counts
// the write calls, not the scans; longhaul's checker, which writes a big
// scan's insights as it finds them, is blocked for a small part of that
// scan, while direct's makes its whole write call at the end.
func TestRunScanning(t *testing.T) {
	t.Parallel()
	cfg := tiny(t)
	cfg.RTT = 20 * time.Millisecond
	cfg.Scans, cfg.PerScan, cfg.BigScans, cfg.Insights = 6, 5, 1, 4000
	cfg.ScanTime, cfg.BigScanTime = 50*time.Millisecond, time.Second
	cfg.Concurrency, cfg.Pool = 2, 2
	cfg.Strategies = []string{Direct, Longhaul}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Workload.ScanSeconds != 0.05 || res.Workload.BigScanSeconds != 1 {
		t.Errorf("workload: scan %vs, big scan %vs; want 0.05 and 1", res.Workload.ScanSeconds, res.Workload.BigScanSeconds)
	}
	// Each small scan's own time (0.5 to 1.5 times ScanTime), the big one's.
	var scanning float64
	for _, sc := range schedule(cfg) {
		scanning += cfg.scanTime(sc).Seconds()
	}
	for _, s := range []*Strategy{res.Direct, res.Longhaul} {
		if s.RowsWritten != cfg.Rows() {
			t.Errorf("%s wrote %d of %d rows", s.Name, s.RowsWritten, cfg.Rows())
		}
		// The checkers' time is their scanning and their blocked time; the
		// timers may overshoot a little, never undershoot.
		if rest := s.CheckerSeconds - s.BlockedSeconds; rest < scanning || rest > scanning+0.25 {
			t.Errorf("%s: %vs on scans, %vs blocked: %vs scanning, want %vs", s.Name, s.CheckerSeconds, s.BlockedSeconds, rest, scanning)
		}
		if s.BlockedShare <= 0 || s.BlockedShare >= 1 {
			t.Errorf("%s: blocked share %v", s.Name, s.BlockedShare)
		}
	}
	// Every write call crosses the link at least once.
	if d := res.Direct; d.PushP50Seconds < cfg.RTT.Seconds() {
		t.Errorf("direct: a write call of %vs (p50), under the RTT", d.PushP50Seconds)
	}
	// The big scan is the longest blocked for either; longhaul's checker
	// handed most of it over during the scan.
	if l := res.Longhaul; l.PushMaxSeconds > cfg.BigScanTime.Seconds()/3 {
		t.Errorf("longhaul: blocked %vs on one scan (max), not far below the big scan's %s", l.PushMaxSeconds, cfg.BigScanTime)
	}
	var table bytes.Buffer
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"each small scan scans 50ms on average", "over 1s", "pushclient Writer", "blocked %"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, table.String())
		}
	}
	noSchemasLeft(t, cfg.DatabaseURL)
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for name, change := range map[string]func(*Config){
		"no scans":          func(c *Config) { c.BigScans = 0 },
		"negative RTT":      func(c *Config) { c.RTT = -time.Millisecond },
		"no checkers":       func(c *Config) { c.Concurrency = 0 },
		"no pool":           func(c *Config) { c.Pool = 0 },
		"empty small scan":  func(c *Config) { c.Scans, c.PerScan = 5, 0 },
		"unknown strategy":  func(c *Config) { c.Strategies = []string{"bulk"} },
		"negative scan":     func(c *Config) { c.ScanTime = -time.Second },
		"negative big scan": func(c *Config) { c.BigScanTime = -time.Second },
		"strategy twice":    func(c *Config) { c.Strategies = []string{Direct, Direct} },
	} {
		c := Default()
		change(&c)
		if _, err := Run(context.Background(), c); err == nil || !strings.HasPrefix(err.Error(), "writepath: ") {
			t.Errorf("%s: Run returned %v, want a writepath: error", name, err)
		}
	}
	for _, c := range []Config{Default(), Mixed()} {
		if err := c.validate(); err != nil {
			t.Errorf("a preset is invalid: %v", err)
		}
	}
}
