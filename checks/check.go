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
	// Kind, when set, is the insight kind an on-demand scan was asked for.
	// A check may ignore it and report everything; the built-in checks do,
	// because completing the scan resolves whatever it did not report.
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
