package checks

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestSelect(t *testing.T) {
	t.Parallel()
	got, err := Select([]string{"tls", "synthetic"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name() != "tls" || got[1].Name() != "synthetic" {
		t.Fatalf("Select(tls, synthetic) = %v", got)
	}
	for _, tc := range []struct {
		name  string
		names []string
		opts  Options
		want  string // in the error
	}{
		{"unknown", []string{"tls", "nmap"}, Options{}, `unknown check "nmap"`},
		{"twice", []string{"tls", "tls"}, Options{}, `"tls" selected twice`},
		{"none", nil, Options{}, "no check selected"},
		{"bad options", []string{"synthetic"}, Options{Synthetic: SyntheticConfig{Jitter: 1}}, "Jitter"},
		{"bad timeout", []string{"tls"}, Options{Timeout: -1}, "Timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Select(tc.names, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Select(%q) = %v, want an error with %q", tc.names, err, tc.want)
			}
		})
	}
}

func TestKindCheck(t *testing.T) {
	t.Parallel()
	for kind, want := range map[string]string{
		"tls.expiry":          "tls",
		"headers.hsts":        "headers",
		"synthetic.open-port": "synthetic",
		"a.b.c":               "a",
		"tls":                 "",
		"tls.":                "",
		".expiry":             "",
		"":                    "",
	} {
		if got := KindCheck(kind); got != want {
			t.Errorf("KindCheck(%q) = %q, want %q", kind, got, want)
		}
	}
}

// TestBuiltin checks that every built-in check is filed under its name and
// that each of its kinds leads back to it.
func TestBuiltin(t *testing.T) {
	t.Parallel()
	all := Builtin(Options{})
	if names := slices.Sorted(maps.Keys(all)); !slices.Equal(names, BuiltinNames()) {
		t.Errorf("Builtin has %q, BuiltinNames says %q", names, BuiltinNames())
	}
	for name, c := range all {
		if c.Name() != name {
			t.Errorf("Builtin()[%q].Name() = %q", name, c.Name())
		}
		k, ok := c.(kinder)
		if !ok {
			t.Fatalf("%s has no Kinds method", name)
		}
		if len(k.Kinds()) == 0 {
			t.Errorf("%s has no kinds", name)
		}
		for _, kind := range k.Kinds() {
			if KindCheck(kind) != name {
				t.Errorf("%s has kind %q, whose check is %q", name, kind, KindCheck(kind))
			}
		}
	}
}
