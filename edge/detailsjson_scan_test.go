package edge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/longhaul/longhaul/internal/pgtest"
)

// The scanner of details_json from inside: its fast path for plain string
// bytes, and its rules against PostgreSQL's own parser.

func TestPlainASCII8(t *testing.T) {
	t.Parallel()
	plain := func(b string) bool {
		for i := range len(b) {
			if c := b[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
				return false
			}
		}
		return true
	}
	check := func(b string) {
		if got, want := plainASCII8(b), plain(b); got != want {
			t.Fatalf("plainASCII8(%q) = %v, want %v", b, got, want)
		}
	}
	// Every byte at every place, among bytes just either side of what
	// counts (the borrows of the bit tricks cross bytes).
	for _, fill := range []byte{'a', ' ', '!', '#', '[', ']', '~', 0x7f} {
		for at := range 8 {
			for c := range 256 {
				b := []byte(strings.Repeat(string(fill), 8))
				b[at] = byte(c)
				check(string(b))
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := []byte{0, 0x1f, 0x20, 0x21, '"', '#', '\\', '[', ']', 0x7f, 0x80, 0xff, 'a', 0x01, 0xe2}
	for range 200_000 {
		var b [8]byte
		for i := range b {
			if rng.IntN(2) == 0 {
				b[i] = pick[rng.IntN(len(pick))]
			} else {
				b[i] = byte(rng.IntN(256))
			}
		}
		check(string(b[:]))
	}
}

// TestDetailsJSONAgreesWithPostgreSQL: for objects with no duplicate key,
// nesting and size within the limits, details_json is accepted exactly when
// PostgreSQL's jsonb takes the text: numbers at the bounds of numeric,
// escapes, and the grammar's corners.
func TestDetailsJSONAgreesWithPostgreSQL(t *testing.T) {
	t.Parallel()
	db := pgtest.Pool(t)
	ctx := context.Background()
	var texts []string
	for _, n := range []string{
		"0", "-0", "1", "-1", "0.5", "1.50", "1E+2", "1e-2", "01", "1.", ".5", "+1", "-", "1e", "1e+", "--1", "0x10",
		"1e131071", "9.999e131071", "1e131072", "10e131070", "10e131071", "99999e131067", "0.001e131074", "0.001e131075",
		"1e-16383", "1e-16384", "0.1e-16382", "0.1e-16383", "1.5e-16382", "15e-16384",
		"0e-16383", "0e-16384", "0.0e-16382", "0.0e-16383",
		"0e1073741822", "0e1073741823", "0e-1073741822", "1e1073741822", "1e-1073741823", "0e99999999999999999999",
		"0E+000000000000000000000001", "1e0000000000000000000000000131072", "-1.0e-0",
	} {
		texts = append(texts, `{"n":`+n+`}`)
	}
	texts = append(texts, `{"n":1`+strings.Repeat("0", 131071)+`}`, `{"n":1`+strings.Repeat("0", 131072)+`}`,
		`{"n":0.`+strings.Repeat("0", 16382)+`1}`, `{"n":0.`+strings.Repeat("0", 16383)+`1}`, `{"n":1.`+strings.Repeat("0", 16383)+`}`)
	for _, s := range []string{
		`a`, `\u0000`, `\u0001`, `\ud800`, `\udbff`, `\udc00`, `\udfff`, `\ud800\udc00`, `\udbff\udfff`, `\uD83D\uDE00`,
		`\ud800\ud800`, `\udc00\ud800`, `\ud800\u0041`, `\ud800x`, `\ud83d\ude00\ud83d`, `x\ud800`, `\u00e9`, `\uffff`,
		`\ufffe`, `\u2028`, `\/`, `\b\f\n\r\t\"\\`, `\x`, `\'`, `\u12`, `\u12g4`, `\U0041`, "\x7f", "\x01", "\t", "\xed\xa0\x80", "\xff",
	} {
		texts = append(texts, `{"s":"`+s+`"}`, `{"`+s+`":1}`)
	}
	texts = append(texts, `{}`, ` { } `, "{\n}", `{"a":[]}`, `{"a":[1,]}`, `{"a":1,}`, `{"a":tru}`, `{"a":True}`, `{"a":null}`,
		`{"a":1}x`, `{"a":1} `, "\ufeff{}", `{"a" 1}`, `{'a':1}`, `{"a":1 "b":2}`, "{\"a\":1}\x00")

	for _, text := range texts {
		_, reason := compactDetailsJSON(text, 1<<20)
		var pgErr error
		var ok bool
		pgErr = db.QueryRow(ctx, `SELECT $1::text::jsonb IS NOT NULL`, text).Scan(&ok)
		shown := text
		if len(shown) > 80 {
			shown = shown[:40] + fmt.Sprintf("…(%d bytes)…", len(shown)-80) + shown[len(shown)-40:]
		}
		if (reason == "") != (pgErr == nil) {
			t.Errorf("%q: edge says %q, PostgreSQL says %v", shown, reason, pgErr)
		}
	}
}
