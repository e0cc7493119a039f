package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/longhaul/longhaul/edge"
)

// TestEdgeBudgetFlags: the edge takes its region's entry of the budget
// file, flags given on the command line override it, and without a file
// the flags (or their defaults) are the budget.
func TestEdgeBudgetFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "budgets.json")
	if err := os.WriteFile(file, []byte(`{"regions": {"eu": {"ack_p99": "40ms", "visible_p99": "1s"}, "ap": {"visible_p99": "3s", "margin": "500ms"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	budget := func(region string, args ...string) (edge.Budget, edge.ShipperConfig, error) {
		fs := flag.NewFlagSet("edge", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var b budgetFlags
		var sh edge.ShipperConfig
		b.register(fs, &sh)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		bu, err := b.budget(fs, region)
		return bu, sh, err
	}
	ms := time.Millisecond
	for _, tc := range []struct {
		region      string
		args        []string
		ack, vis, m time.Duration
	}{
		{"eu", nil, 50 * ms, 2 * time.Second, 200 * ms},
		{"eu", []string{"--budget-visible-p99", "500ms"}, 50 * ms, 500 * ms, 0},
		{"eu", []string{"--budget-file", file}, 40 * ms, time.Second, 100 * ms},
		{"eu", []string{"--budget-file", file, "--budget-ack-p99", "20ms"}, 20 * ms, time.Second, 100 * ms},
		{"eu", []string{"--budget-file", file, "--budget-visible-p99", "4s"}, 40 * ms, 4 * time.Second, 0},
		{"ap", []string{"--budget-file", file, "--budget-visible-p99", "4s"}, 50 * ms, 4 * time.Second, 500 * ms},
	} {
		b, _, err := budget(tc.region, tc.args...)
		if err != nil {
			t.Errorf("%s %v: %v", tc.region, tc.args, err)
			continue
		}
		if b.AckP99 != tc.ack || b.VisibleP99 != tc.vis || b.Margin != tc.m {
			t.Errorf("%s %v: ack %v visible %v margin %v, want %v %v %v", tc.region, tc.args, b.AckP99, b.VisibleP99, b.Margin, tc.ack, tc.vis, tc.m)
		}
	}
	if _, _, err := budget("us", "--budget-file", file); err == nil || !strings.Contains(err.Error(), `region "us"`) {
		t.Errorf("a region the file lacks: %v", err)
	}
	if _, sh, _ := budget("eu", "--flush-interval", "1s"); sh.FixedInterval != time.Second {
		t.Errorf("--flush-interval: %v", sh.FixedInterval)
	}
}
