// Package checks defines what a security check is to longhaul's checkers, and
// holds the built-in ones: synthetic (deterministic, for the embedded default
// and the benchmarks), tls and headers.
//
// A check scans one asset and reports findings; the checker turns them into
// insights (adding account, asset, scan id, checker and observed_at), pushes
// them to an edge and completes the scan, so a finding that a later scan no
// longer reports is resolved.
package checks

import (
	"context"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// Target is what one scan looks at.
type Target struct {
	AccountID string
	// Asset is what the account registered: a host name, "host:port", or a
	// URL, depending on the check.
	Asset string
	// ScanID identifies this scan ("<job_id>/<check>").
	ScanID string
	// Kind, when set, asks for findings of that kind only (an on-demand scan
	// of one insight kind). A check may ignore it and report everything.
	Kind string
}

// Finding is one thing a check found. Kind and Subject are its key within
// the asset: the same finding reported by a later scan is the same insight.
type Finding struct {
	Kind     string
	Subject  string
	Severity longhaulv1.Severity
	// Details become the insight's JSON object; values must be what
	// structpb.NewValue accepts (nil, bool, numbers, string, []any,
	// map[string]any).
	Details map[string]any
}

// Check is one kind of scan. Implementations must be safe for concurrent use:
// a checker runs many scans at once.
type Check interface {
	// Name is the check's name in jobs and flags ("tls").
	Name() string
	// Run scans t and calls report for every finding, from the calling
	// goroutine or not but never after Run returns. It returns when the scan
	// is over or ctx ends (then with ctx's error). An error means the scan
	// failed: nothing it reported counts, and the job is retried.
	Run(ctx context.Context, t Target, report func(Finding)) error
}
