package checks

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/structpb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// kinder is what every built-in check has besides Check.
type kinder interface {
	Check
	Kinds() []string
}

// runCheck runs c on t and returns what it reported, failing the test if c
// reports after Run returns or a finding is one the edge would refuse.
func runCheck(ctx context.Context, t *testing.T, c kinder, target Target) ([]Finding, error) {
	t.Helper()
	var (
		out  []Finding
		done atomic.Bool
	)
	err := c.Run(ctx, target, func(f Finding) {
		if done.Load() {
			t.Errorf("%s reported %s %q after Run returned", c.Name(), f.Kind, f.Subject)
		}
		out = append(out, f)
	})
	done.Store(true)
	for _, f := range out {
		checkFinding(t, c, f)
	}
	return out, err
}

// checkFinding fails the test unless f is a finding of c that the edge
// accepts (see edge.ValidateInsights): a kind of c's, strings that are
// valid UTF-8 without control characters and within the byte limits, a
// known severity, details that structpb accepts and jsonb stores.
func checkFinding(t errorer, c kinder, f Finding) {
	t.Helper()
	if KindCheck(f.Kind) != c.Name() || !slices.Contains(c.Kinds(), f.Kind) {
		t.Errorf("%s reported kind %q, not one of its Kinds %q", c.Name(), f.Kind, c.Kinds())
	}
	for _, s := range []struct {
		field, val string
		max        int
	}{{"kind", f.Kind, 128}, {"subject", f.Subject, 1024}} {
		if r := badText(s.val, s.max); r != "" {
			t.Errorf("%s: finding %s: %s %q %s", c.Name(), f.Kind, s.field, s.val, r)
		}
	}
	if f.Severity < longhaulv1.Severity_LOW || f.Severity > longhaulv1.Severity_CRITICAL {
		t.Errorf("%s: finding %s %q: severity %v", c.Name(), f.Kind, f.Subject, f.Severity)
	}
	if _, err := structpb.NewStruct(f.Details); err != nil {
		t.Errorf("%s: finding %s %q: details: %v", c.Name(), f.Kind, f.Subject, err)
	}
	b, err := json.Marshal(f.Details)
	switch {
	case err != nil:
		t.Errorf("%s: finding %s %q: details: %v", c.Name(), f.Kind, f.Subject, err)
	case len(b) > 16<<10:
		t.Errorf("%s: finding %s %q: details take %d bytes", c.Name(), f.Kind, f.Subject, len(b))
	case strings.Contains(string(b), `\u0000`):
		t.Errorf("%s: finding %s %q: details hold a NUL: %s", c.Name(), f.Kind, f.Subject, b)
	}
}

// errorer is what checkFinding needs of a *testing.T or a *rapid.T.
type errorer interface {
	Helper()
	Errorf(format string, args ...any)
}

// badText says why the edge would refuse s in a string field, or "".
func badText(s string, max int) string {
	switch {
	case s == "":
		return "is empty"
	case len(s) > max:
		return "is too long"
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return "holds a control character"
		}
	}
	return ""
}

// severities maps each finding's kind to its severity, failing the test if
// a kind comes twice (a check reports one finding per kind and subject).
func severities(t *testing.T, fs []Finding) map[string]longhaulv1.Severity {
	t.Helper()
	out := map[string]longhaulv1.Severity{}
	for _, f := range fs {
		if _, dup := out[f.Kind]; dup {
			t.Errorf("kind %s reported twice", f.Kind)
		}
		out[f.Kind] = f.Severity
	}
	return out
}
