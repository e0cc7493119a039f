package checks

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// noSleep makes the synthetic check report without waiting; it adds up
// what it was asked to wait.
type noSleep struct{ total time.Duration }

func (n *noSleep) sleep(ctx context.Context, d time.Duration) error {
	n.total += d
	return ctx.Err()
}

// scan runs a synthetic scan of target without waiting and returns its
// findings and the time it would have taken.
func scan(t *testing.T, cfg SyntheticConfig, target Target) ([]Finding, time.Duration) {
	t.Helper()
	var ns noSleep
	cfg.Sleep = ns.sleep
	fs, err := runCheck(t.Context(), t, NewSynthetic(cfg), target)
	if err != nil {
		t.Fatalf("synthetic %q: %v", target.Asset, err)
	}
	return fs, ns.total
}

func keys(fs []Finding) map[string]bool {
	out := make(map[string]bool, len(fs))
	for _, f := range fs {
		out[f.Kind+" "+f.Subject] = true
	}
	return out
}

// TestSyntheticDeterministic checks that an asset's scan reports the same
// findings and costs the same every time, that the scan id changes only the
// varying part, and that Cost tells what Run does.
func TestSyntheticDeterministic(t *testing.T) {
	t.Parallel()
	s := NewSynthetic(SyntheticConfig{})
	for i := range 50 {
		target := Target{AccountID: "acct-1", Asset: fmt.Sprintf("host-%d.example", i), ScanID: "job-1/synthetic"}
		a, da := scan(t, SyntheticConfig{}, target)
		b, db := scan(t, SyntheticConfig{}, target)
		if !reflect.DeepEqual(a, b) || da != db {
			t.Fatalf("%s: two scans differ: %d findings in %v, then %d in %v", target.Asset, len(a), da, len(b), db)
		}
		if d, n := s.Cost(target); d != da || n != len(a) {
			t.Fatalf("%s: Cost = %v, %d; Run took %v with %d findings", target.Asset, d, n, da, len(a))
		}
		if len(keys(a)) != len(a) {
			t.Fatalf("%s: a key is reported twice", target.Asset)
		}

		target.ScanID = "job-2/synthetic"
		c, dc := scan(t, SyntheticConfig{}, target)
		if dc != da || len(c) != len(a) {
			t.Fatalf("%s: another scan id changed the cost: %v, %d findings, then %v, %d", target.Asset, da, len(a), dc, len(c))
		}
		for _, f := range a {
			if f.Details["stable"] == true && !keys(c)[f.Kind+" "+f.Subject] {
				t.Fatalf("%s: stable finding %s %q missing from another scan", target.Asset, f.Kind, f.Subject)
			}
		}

		other, _ := scan(t, SyntheticConfig{}, Target{AccountID: "acct-2", Asset: target.Asset, ScanID: target.ScanID})
		if len(a) > 0 && reflect.DeepEqual(a, other) {
			t.Fatalf("%s: another account got the same findings", target.Asset)
		}
	}
}

// TestSyntheticVarying checks that scans with different ids resolve and
// find some findings, drawn from a bounded pool.
func TestSyntheticVarying(t *testing.T) {
	t.Parallel()
	cfg := SyntheticConfig{Varying: 0.5}
	asset := "big-100.example"
	union := map[string]bool{}
	changed := false
	var first map[string]bool
	for i := range 20 {
		fs, _ := scan(t, cfg, Target{AccountID: "a", Asset: asset, ScanID: fmt.Sprintf("job-%d/synthetic", i)})
		if len(fs) != 100 {
			t.Fatalf("scan %d: %d findings, want 100", i, len(fs))
		}
		k := keys(fs)
		if first == nil {
			first = k
		} else if !reflect.DeepEqual(first, k) {
			changed = true
		}
		for key := range k {
			union[key] = true
		}
	}
	if !changed {
		t.Error("20 scan ids gave the same findings")
	}
	// 50 stable and a pool of 100 varying.
	if len(union) > 150 {
		t.Errorf("20 scans found %d distinct findings, more than the 150 stable and pool", len(union))
	}

	fs, _ := scan(t, SyntheticConfig{Varying: -1}, Target{AccountID: "a", Asset: asset, ScanID: "x"})
	gs, _ := scan(t, SyntheticConfig{Varying: -1}, Target{AccountID: "a", Asset: asset, ScanID: "y"})
	if !reflect.DeepEqual(fs, gs) {
		t.Error("with Varying < 0, the scan id changed the findings")
	}
}

// TestSyntheticDistribution checks, over 10,000 assets, the share of slow
// ones, the jitter bounds, the mean number of findings, the cap, and that
// severities and kinds are spread.
func TestSyntheticDistribution(t *testing.T) {
	t.Parallel()
	cfg := SyntheticConfig{Insights: 20, MaxInsights: 100, Fast: 10 * time.Millisecond, Slow: 10 * time.Second, SlowFraction: 0.05, Jitter: 0.2}
	s := NewSynthetic(cfg)
	const assets = 10_000
	slow, total := 0, 0
	for i := range assets {
		d, n := s.Cost(Target{AccountID: fmt.Sprintf("acct-%d", i%37), Asset: fmt.Sprintf("asset-%d.example.com", i)})
		base := cfg.Fast
		if d > time.Second {
			slow++
			base = cfg.Slow
		}
		if lo, hi := time.Duration(float64(base)*0.8), time.Duration(float64(base)*1.2); d < lo || d > hi {
			t.Fatalf("asset %d: duration %v outside [%v, %v]", i, d, lo, hi)
		}
		if n < 0 || n > cfg.MaxInsights {
			t.Fatalf("asset %d: %d findings, cap %d", i, n, cfg.MaxInsights)
		}
		total += n
	}
	// Binomial: the standard deviation of the share is 0.0022; allow 3.
	if share := float64(slow) / assets; share < 0.0435 || share > 0.0565 {
		t.Errorf("slow share %.4f, want 0.05", share)
	}
	if mean := float64(total) / assets; mean < 19 || mean > 21 {
		t.Errorf("mean findings %.2f, want about 20", mean)
	}

	fs, _ := scan(t, SyntheticConfig{}, Target{AccountID: "a", Asset: "big-4000"})
	kinds, sevs := map[string]int{}, map[string]int{}
	for _, f := range fs {
		kinds[f.Kind]++
		sevs[f.Severity.String()]++
	}
	if len(kinds) != len(s.Kinds()) || len(sevs) != 4 {
		t.Errorf("4000 findings have kinds %v and severities %v, want all", kinds, sevs)
	}

	if d, _ := NewSynthetic(SyntheticConfig{SlowFraction: -1, Jitter: -1}).Cost(Target{Asset: "x"}); d != DefaultSyntheticFast {
		t.Errorf("no slow assets, no jitter: duration %v, want %v", d, DefaultSyntheticFast)
	}
	if d, _ := NewSynthetic(SyntheticConfig{SlowFraction: 1, Jitter: -1}).Cost(Target{Asset: "x"}); d != DefaultSyntheticSlow {
		t.Errorf("all slow, no jitter: duration %v, want %v", d, DefaultSyntheticSlow)
	}
}

// TestSyntheticBig checks the "big-N" convention: exactly N findings,
// unique, all of the check's kinds, and a slow scan.
func TestSyntheticBig(t *testing.T) {
	t.Parallel()
	for asset, want := range map[string]int{
		"big-0":               0,
		"big-7.example":       7,
		"big-500000.example":  500_000,
		"big-99999999999.x":   MaxBigInsights,
		"big-12x.example":     -1, // not the convention
		"bigger-5.example":    -1,
		"www.big-5.example":   -1,
		"big-.example":        -1,
		"big-3.big-4.example": 3,
	} {
		n, big := bigCount(asset)
		if want < 0 {
			if big {
				t.Errorf("bigCount(%q) = %d, want no match", asset, n)
			}
			continue
		}
		if !big || n != want {
			t.Errorf("bigCount(%q) = %d, %v, want %d", asset, n, big, want)
		}
	}

	cfg := SyntheticConfig{Fast: time.Millisecond, Slow: time.Hour, Jitter: -1}
	if d, n := NewSynthetic(cfg).Cost(Target{Asset: "big-500000.example"}); d != time.Hour || n != 500_000 {
		t.Errorf("big-500000: Cost = %v, %d, want 1h, 500000", d, n)
	}
	// Checking every finding of 500,000 against the edge's rules takes
	// seconds under the race detector; the other tests check them.
	const n = 200_000
	seen := make(map[string]bool, n)
	var ns noSleep
	cfg.Sleep = ns.sleep
	err := NewSynthetic(cfg).Run(t.Context(), Target{AccountID: "a", Asset: fmt.Sprintf("big-%d.example", n), ScanID: "j/synthetic"},
		func(f Finding) {
			if !strings.HasPrefix(f.Kind, "synthetic.") {
				t.Fatalf("kind %q", f.Kind)
			}
			seen[f.Kind+" "+f.Subject] = true
		})
	if err != nil || len(seen) != n || ns.total != time.Hour {
		t.Fatalf("big-%d: %d distinct findings in %v, %v", n, len(seen), ns.total, err)
	}
}

// TestSyntheticCancel checks that a scan cancelled in its sleep returns
// ctx's error at once, and that one cancelled before it starts reports
// nothing.
func TestSyntheticCancel(t *testing.T) {
	t.Parallel()
	asleep := make(chan struct{})
	cfg := SyntheticConfig{Fast: time.Hour, Slow: time.Hour, Sleep: func(ctx context.Context, d time.Duration) error {
		close(asleep)
		return sleepCtx(ctx, d)
	}}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := runCheck(ctx, t, NewSynthetic(cfg), Target{AccountID: "a", Asset: "big-10"})
		errc <- err
	}()
	<-asleep
	cancel()
	if err := <-errc; err != context.Canceled {
		t.Errorf("cancelled mid-sleep: %v, want context.Canceled", err)
	}

	var ns noSleep
	fs, err := runCheck(ctx, t, NewSynthetic(SyntheticConfig{Sleep: ns.sleep}), Target{AccountID: "a", Asset: "big-10"})
	if err != context.Canceled || len(fs) != 0 {
		t.Errorf("cancelled before: %d findings, %v", len(fs), err)
	}

	boom := errors.New("boom")
	_, err = runCheck(t.Context(), t, NewSynthetic(SyntheticConfig{Sleep: func(context.Context, time.Duration) error { return boom }}), Target{Asset: "x"})
	if !errors.Is(err, boom) {
		t.Errorf("failing Sleep: %v, want boom", err)
	}
}

// TestSyntheticDefaultSleep checks that the real timer path returns once
// its (small) duration has passed.
func TestSyntheticDefaultSleep(t *testing.T) {
	t.Parallel()
	s := NewSynthetic(SyntheticConfig{Fast: time.Millisecond, Slow: time.Millisecond, Insights: 3})
	if _, err := runCheck(t.Context(), t, s, Target{AccountID: "a", Asset: "big-16"}); err != nil {
		t.Fatal(err)
	}
}

func TestSyntheticConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  SyntheticConfig
		want string
	}{
		{SyntheticConfig{Insights: -1}, "Insights"},
		{SyntheticConfig{MaxInsights: -1}, "MaxInsights"},
		{SyntheticConfig{Fast: -1}, "Fast"},
		{SyntheticConfig{Slow: -1}, "Slow"},
		{SyntheticConfig{SlowFraction: 1.5}, "SlowFraction"},
		{SyntheticConfig{Jitter: 1}, "Jitter"},
		{SyntheticConfig{Varying: 2}, "Varying"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	if err := (SyntheticConfig{SlowFraction: -1, Jitter: -1, Varying: -1}).Validate(); err != nil {
		t.Errorf("negative fractions mean none: %v", err)
	}
}

func BenchmarkSynthetic(b *testing.B) {
	s := NewSynthetic(SyntheticConfig{Sleep: func(context.Context, time.Duration) error { return nil }})
	n := 0
	for i := 0; b.Loop(); i++ {
		if err := s.Run(b.Context(), Target{AccountID: "a", Asset: "big-1000", ScanID: fmt.Sprint(i)}, func(Finding) { n++ }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "findings/s")
}
