package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/longhaul/longhaul/edge"
)

// budgetFlags are the edge's latency budget flags: a budget file for every
// region, and flags that override its entry for this edge's region.
type budgetFlags struct {
	file         string
	ack, visible time.Duration
}

func (b *budgetFlags) register(fs *flag.FlagSet, sh *edge.ShipperConfig) {
	fs.StringVar(&b.file, "budget-file", "", `JSON file of the regions' latency budgets, e.g. {"regions":{"eu":{"ack_p99":"50ms","visible_p99":"2s"}}}; the edge takes its region's entry (or "default"); --budget-* flags override it`)
	fs.DurationVar(&b.ack, "budget-ack-p99", edge.DefaultAckP99, "budget: p99 of a push's acknowledgement (durable in the WAL)")
	fs.DurationVar(&b.visible, "budget-visible-p99", edge.DefaultVisibleP99, "budget: p99 from a push to the insight's being applied in the primary; the shipper lets batches grow as long as it allows")
	fs.DurationVar(&sh.FixedInterval, "flush-interval", 0, "ship every interval regardless of the budget (for comparison; 0: steer by the budget)")
}

// budget returns the edge's budget: the file's entry for region, if a
// file was given, with the flags set on the command line over it.
func (b *budgetFlags) budget(fs *flag.FlagSet, region string) (edge.Budget, error) {
	bu := edge.DefaultBudget()
	if b.file != "" {
		var err error
		if bu, err = edge.ReadBudgetFile(b.file, region); err != nil {
			return edge.Budget{}, fmt.Errorf("--budget-file: %w", err)
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if b.file == "" || set["budget-ack-p99"] {
		bu.AckP99 = b.ack
	}
	if b.file == "" || set["budget-visible-p99"] {
		if bu.VisibleP99 != b.visible && bu.Margin == bu.VisibleP99/10 {
			bu.Margin = 0 // the default margin follows the budget
		}
		bu.VisibleP99 = b.visible
	}
	return bu, nil
}
