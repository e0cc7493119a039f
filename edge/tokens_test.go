package edge

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestParseTokens: the tokens file's lines, comments and blank lines; each
// error names the line, and never repeats the token.
func TestParseTokens(t *testing.T) {
	t.Parallel()
	const a, b, c = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb", "c0123456789+/=-._~"
	good := "# checkers of eu\n\n" + a + "\n  " + b + "\tci-eu   # the CI fleet\n" + c + " scoped accounts=acme,globex\n" + strings.Repeat("d", 16) + " accounts=acme\n"
	tokens, err := parseTokens("tokens", strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 4 {
		t.Fatalf("%d tokens, want 4", len(tokens))
	}
	if n := tokens[0].name; !strings.HasPrefix(n, "sha256:") || len(n) != len("sha256:")+12 || tokens[0].accounts != nil {
		t.Errorf("unnamed token: %q %v", n, tokens[0].accounts)
	}
	if tokens[1].name != "ci-eu" || tokens[1].accounts != nil || tokens[1].line != 4 {
		t.Errorf("named token: %+v", tokens[1])
	}
	if tokens[2].name != "scoped" || len(tokens[2].accounts) != 2 || !tokens[2].accounts["globex"] {
		t.Errorf("scoped token: %+v", tokens[2])
	}
	if !strings.HasPrefix(tokens[3].name, "sha256:") || !tokens[3].accounts["acme"] {
		t.Errorf("scoped, unnamed: %+v", tokens[3])
	}
	if got := lookup(tokens, b); got == nil || got.name != "ci-eu" {
		t.Errorf("lookup of a known token: %v", got)
	}
	if got := lookup(tokens, b+"x"); got != nil {
		t.Errorf("lookup of an unknown token: %v", got)
	}

	for name, tc := range map[string]struct{ file, want string }{
		"short":             {"# x\n" + a + "\nshort-token name\n", "line 3: the token is 11 characters; at least 16"},
		"duplicate":         {a + " one\n\n" + a + " two\n", "line 3: the same token as line 1"},
		"bad character":     {"aaaaaaaa\"aaaaaaaaaa\n", "line 1: the token has a character (at 9)"},
		"extra field":       {a + " name extra\n", `line 1: unexpected "extra"`},
		"accounts twice":    {a + " accounts=a accounts=b\n", `line 1: unexpected "accounts=b"`},
		"empty account":     {a + " n accounts=a,,b\n", "line 1: accounts= has an empty account"},
		"no accounts":       {a + " n accounts=\n", "line 1: accounts= has an empty account"},
		"empty file":        {"# nothing\n\n", "no tokens in it"},
		"several, each one": {"short1\n" + a + "\nshort2\n", "line 3"},
	} {
		_, err := parseTokens("tokens", strings.NewReader(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "tokens file tokens") {
			t.Errorf("%s: %v; want an error with %q", name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), a) || strings.Contains(err.Error(), "aaaaaaaa\"") {
			t.Errorf("%s: the error repeats the token: %v", name, err)
		}
	}
}

// TestTokenFileReload: a changed tokens file is read again (at most once
// a second); a version with errors is refused and the tokens before kept.
func TestTokenFileReload(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tokens")
	const one, two = "one-0123456789abcdef", "two-0123456789abcdef"
	write := func(s string, age time.Duration) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		// Distinct modification times, however coarse the file system's.
		mt := time.Now().Add(-age)
		if err := os.Chtimes(path, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	write(one+" first\n", 3*time.Hour)
	f, err := loadTokenFile(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	f.now = func() time.Time { return clock }
	var reloads []bool
	f.reloads = func(ok bool) { reloads = append(reloads, ok) }
	known := func(tok string) bool { return lookup(f.current(), tok) != nil }

	write(two+" second\n", 2*time.Hour)
	if !known(one) || known(two) {
		t.Fatal("read again within the second")
	}
	clock = clock.Add(time.Second)
	if known(one) || !known(two) {
		t.Fatal("the changed file was not read again")
	}
	write("short\n", time.Hour)
	clock = clock.Add(time.Second)
	if !known(two) {
		t.Fatal("a bad version replaced the tokens")
	}
	clock = clock.Add(time.Second)
	_ = f.current() // the same bad version: not counted again
	os.Remove(path)
	clock = clock.Add(time.Second)
	if !known(two) {
		t.Fatal("a removed file dropped the tokens")
	}
	write(one+"\n", 0)
	clock = clock.Add(time.Second)
	if !known(one) || known(two) {
		t.Fatal("the fixed file was not read again")
	}
	if want := []bool{true, false, false, true}; len(reloads) != len(want) || reloads[0] != want[0] || reloads[1] != want[1] || reloads[2] != want[2] || reloads[3] != want[3] {
		t.Fatalf("reloads %v, want %v", reloads, want)
	}
	if _, err := loadTokenFile(filepath.Join(t.TempDir(), "missing"), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a missing tokens file at start was accepted")
	}
}
