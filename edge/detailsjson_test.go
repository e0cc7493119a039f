package edge_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"pgregory.net/rapid"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/primary"
)

// Insight.details_json is checked and compacted by a scanner of its own
// (edge/detailsjson.go). These tests hold it to encoding/json (json.Valid,
// json.Compact, a walk of json.Decoder tokens) for what it accepts and
// stores, to the Struct path for details both can carry, and, in
// detailsjson_service_test.go, to PostgreSQL.

type djCase struct {
	name string
	text string
	lim  edge.Limits
	// details, when set, is sent beside text.
	details *structpb.Struct
	// want is what is stored when accepted ("" for text itself); reason
	// the exact reason when refused.
	want, reason string
}

func djCases() []djCase {
	deep := func(n int, open, close string) string {
		return `{"a":` + strings.Repeat(open, n-1) + strings.Repeat(close, n-1) + `}`
	}
	nestedObjects := func(n int) string { // {"n":{"n":…"leaf"…}}, n levels
		return strings.Repeat(`{"n":`, n) + `"leaf"` + strings.Repeat(`}`, n)
	}
	manyKeys := func(n int, extra string) string {
		var b strings.Builder
		b.WriteString(`{`)
		for i := range n {
			fmt.Fprintf(&b, `"k%d":%d,`, i, i)
		}
		b.WriteString(extra + `}`)
		return b.String()
	}
	const nul = "must not contain NUL, which PostgreSQL jsonb refuses"
	const esc0 = `must not contain \u0000, which PostgreSQL jsonb refuses`
	const numeric = "is beyond the range of PostgreSQL's numeric, which jsonb uses " +
		"(at most 131072 digits before the decimal point and 16383 after; byte 5)"
	const dup = "twice (PostgreSQL jsonb would keep only the last)"
	long := strings.Repeat("é", 40) // 80 bytes
	return []djCase{
		// Accepted: stored as given, whitespace between tokens dropped.
		{name: "empty object", text: `{}`},
		{name: "whitespace between tokens", text: " {\"a\" : 1 ,\t\"b\":[ true,false , null ],\r\n\"c\" : { } } \n",
			want: `{"a":1,"b":[true,false,null],"c":{}}`},
		{name: "whitespace inside strings kept", text: `{ "a b" : " x  y " }`, want: `{"a b":" x  y "}`},
		{name: "escapes kept as written", text: `{"s":"\u00e9\"\\\/\b\f\n\r\t\uD83D\uDE00\u2028<>&","é":"☃","\u00e9x":"\ufffd\uffff"}`},
		{name: "key order and number spelling kept", text: `{"z":1.50,"a":-0,"m":1E+2,"n":0.000e-5,"o":-12.5e-3}`},
		{name: "DEL and non-ASCII raw", text: "{\"d\":\"\x7f\",\"u\":\"\U0010ffff😀\"}"},
		{name: "numbers numeric holds", text: `{"big":123456789012345678901234567890,"max":9.99e131071,"shifted":0.001e131074,` +
			`"tiny":1e-16383,"zero":0e1073741822,"zeros":0.0e-16382,"ten":10e131070}`},
		{name: "depth 32 of arrays", text: deep(32, "[", "]")},
		{name: "depth 32 of objects", text: nestedObjects(32)},
		{name: "same key in different objects", text: `{"a":{"a":1},"b":{"a":2},"c":[{"a":3},{"a":4}]}`},
		{name: "keys that differ", text: `{"a":1,"A":2,"a ":3,"":4,"\u00e9":5,"e\u0301":6}`},
		{name: "many keys", text: manyKeys(40, `"k":0`)},
		{name: "at the limit", lim: edge.Limits{MaxDetailsBytes: 20}, text: `{"a":"xxxxxxxxxxxx"}`},
		{name: "at the limit once compact", lim: edge.Limits{MaxDetailsBytes: 20}, text: ` { "a" : "xxxxxxxxxxxx" } `,
			want: `{"a":"xxxxxxxxxxxx"}`},

		// Not one object.
		{name: "array", text: `[]`, reason: "must be one JSON object, got an array"},
		{name: "string", text: `"{}"`, reason: "must be one JSON object, got a string"},
		{name: "number", text: `-1`, reason: "must be one JSON object, got a number"},
		{name: "boolean", text: `false`, reason: "must be one JSON object, got a boolean"},
		{name: "null", text: `null`, reason: "must be one JSON object, got null"},
		{name: "only whitespace", text: " \n\t", reason: "must be one JSON object, got only whitespace"},
		{name: "two objects", text: `{"a":1}{}`, reason: "must be one JSON object, found '{' after it at byte 7"},
		{name: "trailing garbage", text: `{"a":1} x`, reason: "must be one JSON object, found 'x' after it at byte 8"},
		{name: "garbage", text: `x`, reason: `is not valid JSON at byte 0 (inside "/"): expected '{', found 'x'`},
		{name: "byte order mark", text: "\ufeff{}", reason: `is not valid JSON at byte 0 (inside "/"): expected '{', found byte 0xef`},

		// Syntax.
		{name: "unclosed object", text: `{`, reason: `is not valid JSON: it ends where a key (a string) should be (inside "/")`},
		{name: "unclosed nested", text: `{"a":[1,{"b":2}`, reason: `is not valid JSON: it ends where ',' or ']' after an element of an array should be (inside "/a")`},
		{name: "no colon", text: `{"a"}`, reason: `is not valid JSON at byte 4 (inside "/"): expected ':' after a key, found '}'`},
		{name: "trailing comma in object", text: `{"a":1,}`, reason: `is not valid JSON at byte 7 (inside "/"): expected a key (a string), found '}'`},
		{name: "trailing comma in array", text: `{"a":[1,]}`, reason: `is not valid JSON at byte 8 (inside "/a/1"): expected a value, found ']'`},
		{name: "missing comma", text: `{"a":[1 2]}`, reason: `is not valid JSON at byte 8 (inside "/a"): expected ',' or ']' after an element of an array, found '2'`},
		{name: "bare key", text: `{a:1}`, reason: `is not valid JSON at byte 1 (inside "/"): expected a key (a string), found 'a'`},
		{name: "single quotes", text: `{'a':1}`, reason: `is not valid JSON at byte 1 (inside "/"): expected a key (a string), found "'"`},
		{name: "leading zero", text: `{"a":01}`, reason: `is not valid JSON at byte 6 (inside "/"): expected ',' or '}' after a member of an object, found '1'`},
		{name: "plus sign", text: `{"a":+1}`, reason: `is not valid JSON at byte 5 (inside "/a"): expected a value, found '+'`},
		{name: "no integer part", text: `{"a":.5}`, reason: `is not valid JSON at byte 5 (inside "/a"): expected a value, found '.'`},
		{name: "no fraction digits", text: `{"a":1.}`, reason: `is not valid JSON at byte 7 (inside "/a"): expected a digit after the decimal point, found '}'`},
		{name: "no exponent digits", text: `{"a":1e+}`, reason: `is not valid JSON at byte 8 (inside "/a"): expected a digit in the exponent, found '}'`},
		{name: "minus alone", text: `{"a":-}`, reason: `is not valid JSON at byte 6 (inside "/a"): expected a digit, found '}'`},
		{name: "NaN", text: `{"a":NaN}`, reason: `is not valid JSON at byte 5 (inside "/a"): expected a value, found 'N'`},
		{name: "bad literal", text: `{"a":tru}`, reason: `is not valid JSON at byte 8 (inside "/a"): expected the literal true, found '}'`},
		{name: "cut literal", text: `{"a":nul`, reason: `is not valid JSON: it ends where the literal null should be (inside "/a")`},
		{name: "NUL between tokens", text: "{\"a\":1\x00}", reason: `is not valid JSON at byte 6 (inside "/"): expected ',' or '}' after a member of an object, found U+0000`},
		{name: "invalid UTF-8 between tokens", text: "{\"a\":\xff}", reason: `is not valid JSON at byte 5 (inside "/a"): expected a value, found byte 0xff`},

		// Strings.
		{name: "unclosed string", text: `{"a":"x`, reason: `string at "/a" is not valid JSON: it starts at byte 5 and never ends`},
		{name: "unclosed escape", text: `{"a":"x\`, reason: `string at "/a" is not valid JSON: it starts at byte 5 and never ends`},
		{name: "unclosed key", text: `{"a`, reason: `a key of the object at "/" is not valid JSON: it starts at byte 1 and never ends`},
		{name: "raw newline", text: "{\"a\":\"x\ny\"}", reason: `string at "/a" is not valid JSON: control character U+000A must be escaped (byte 7)`},
		{name: "raw tab in key", text: "{\"a\tb\":1}", reason: `a key of the object at "/" is not valid JSON: control character U+0009 must be escaped (byte 3)`},
		{name: "raw NUL", text: "{\"a\":\"\x00\"}", reason: `string at "/a" ` + nul + ` (byte 6)`},
		{name: "raw NUL in key", text: "{\"\x00\":1}", reason: `a key of the object at "/" ` + nul + ` (byte 2)`},
		{name: "escaped NUL", text: `{"a":"\u0000"}`, reason: `string at "/a" ` + esc0 + ` (byte 6)`},
		{name: "escaped NUL in key", text: `{"k\u0000":1}`, reason: `a key of the object at "/" ` + esc0 + ` (byte 3)`},
		{name: "escaped NUL nested", text: `{"a":[{"b":"x\u0000"}]}`, reason: `string at "/a/0/b" ` + esc0 + ` (byte 13)`},
		{name: "lone high surrogate", text: `{"a":"\ud800"}`, reason: `string at "/a" must not contain the lone UTF-16 surrogate \ud800, which PostgreSQL jsonb refuses (byte 6)`},
		{name: "lone low surrogate", text: `{"a":"\uDC00"}`, reason: `string at "/a" must not contain the lone UTF-16 surrogate \udc00, which PostgreSQL jsonb refuses (byte 6)`},
		{name: "high then not low", text: `{"a":"\ud800\u0041"}`, reason: `string at "/a" must not contain the lone UTF-16 surrogate \ud800, which PostgreSQL jsonb refuses (byte 6)`},
		{name: "high then high", text: `{"a":"\udbff\udbff"}`, reason: `string at "/a" must not contain the lone UTF-16 surrogate \udbff, which PostgreSQL jsonb refuses (byte 6)`},
		{name: "high then text", text: `{"a":"\ud800x"}`, reason: `string at "/a" must not contain the lone UTF-16 surrogate \ud800, which PostgreSQL jsonb refuses (byte 6)`},
		{name: "pair reversed", text: `{"a":"\udc00\ud800"}`, reason: `string at "/a" must not contain the lone UTF-16 surrogate \udc00, which PostgreSQL jsonb refuses (byte 6)`},
		{name: "pair then lone", text: `{"a":"\ud83d\ude00\ud83d"}`, reason: `string at "/a" must not contain the lone UTF-16 surrogate \ud83d, which PostgreSQL jsonb refuses (byte 18)`},
		{name: "lone surrogate in key", text: `{"\udfff":1}`, reason: `a key of the object at "/" must not contain the lone UTF-16 surrogate \udfff, which PostgreSQL jsonb refuses (byte 2)`},
		{name: "invalid UTF-8", text: "{\"a\":\"\xff\"}", reason: `string at "/a" must be valid UTF-8 (byte 6)`},
		{name: "surrogate as UTF-8", text: "{\"a\":\"x\xed\xa0\x80\"}", reason: `string at "/a" must be valid UTF-8 (byte 7)`},
		{name: "overlong UTF-8", text: "{\"a\":\"\xc0\xaf\"}", reason: `string at "/a" must be valid UTF-8 (byte 6)`},
		{name: "cut rune", text: "{\"a\":\"\xc3\"}", reason: `string at "/a" must be valid UTF-8 (byte 6)`},
		{name: "invalid UTF-8 in key", text: "{\"k\xff\":1}", reason: `a key of the object at "/" must be valid UTF-8 (byte 3)`},
		{name: "unknown escape", text: `{"a":"\x"}`, reason: `string at "/a" is not valid JSON: a backslash followed by 'x' is not an escape (byte 6)`},
		{name: "escaped quote", text: `{"a":"\'"}`, reason: `string at "/a" is not valid JSON: a backslash followed by "'" is not an escape (byte 6)`},
		{name: "upper-case U", text: `{"a":"\U0041"}`, reason: `string at "/a" is not valid JSON: a backslash followed by 'U' is not an escape (byte 6)`},
		{name: "short \\u", text: `{"a":"\u12"}`, reason: `string at "/a" is not valid JSON: \u must be followed by four hex digits (byte 6)`},
		{name: "not hex", text: `{"a":"\u12G4"}`, reason: `string at "/a" is not valid JSON: \u must be followed by four hex digits (byte 6)`},

		// Duplicate keys.
		{name: "duplicate", text: `{"a":1,"a":2}`, reason: `object at "/" has the key "a" ` + dup},
		{name: "duplicate nested", text: `{"x":[{"k":1,"k":{}}]}`, reason: `object at "/x/0" has the key "k" ` + dup},
		{name: "duplicate by escape", text: `{"ab":1,"a\u0062":2}`, reason: `object at "/" has the key "ab" ` + dup},
		{name: "duplicate of escapes", text: `{"\n":1,"\u000a":2}`, reason: `object at "/" has the key "\n" ` + dup},
		{name: "duplicate empty key", text: `{"":1,"":2}`, reason: `object at "/" has the key "" ` + dup},
		{name: "duplicate in a big object", text: manyKeys(40, `"k17":0`), reason: `object at "/" has the key "k17" ` + dup},
		{name: "duplicate just past linear", text: manyKeys(9, `"k0":0`), reason: `object at "/" has the key "k0" ` + dup},
		{name: "duplicate, path escaped", text: `{"a/b":{"c~d":{"e":1,"e":2}}}`, reason: `object at "/a~1b/c~0d" has the key "e" ` + dup},
		{name: "duplicate long key", text: `{"` + long + `":1,"` + long + `":2}`,
			reason: `object at "/" has the key "` + long[:60] + `..." ` + dup},

		// Depth, numbers, size.
		{name: "depth 33 of arrays", text: deep(33, "[", "]"),
			reason: `must not nest deeper than 32 levels (at "/a` + strings.Repeat("/0", 31) + `")`},
		{name: "depth 33 of objects", text: nestedObjects(33),
			reason: `must not nest deeper than 32 levels (at "` + strings.Repeat("/n", 32) + `")`},
		{name: "depth 1000", text: deep(1000, "[", "]"),
			reason: `must not nest deeper than 32 levels (at "/a` + strings.Repeat("/0", 31) + `")`},
		{name: "weight too big", text: `{"n":1e131072}`, reason: `number at "/n" ` + numeric},
		{name: "weight too big by digits", text: `{"n":100e131070}`, reason: `number at "/n" ` + numeric},
		{name: "scale too big", text: `{"n":1e-16384}`, reason: `number at "/n" ` + numeric},
		{name: "scale too big by digits", text: `{"n":0.1e-16383}`, reason: `number at "/n" ` + numeric},
		{name: "zero, scale too big", text: `{"n":0e-16384}`, reason: `number at "/n" ` + numeric},
		{name: "zero, exponent too big", text: `{"n":0e1073741823}`, reason: `number at "/n" ` + numeric},
		{name: "exponent past int64", text: `{"n":-1e-99999999999999999999999}`, reason: `number at "/n" ` + numeric},
		{name: "over the limit", lim: edge.Limits{MaxDetailsBytes: 20}, text: `{"a":"xxxxxxxxxxxxx"}`,
			reason: "must take at most 20 bytes as JSON, got 21"},
		{name: "over the default limit", text: `{"a":"` + strings.Repeat("x", 17000) + `"}`,
			reason: "must take at most 16384 bytes as JSON, got 17008"},
		{name: "far over the limit", text: `{"a":"` + strings.Repeat("x", 16380) + `","b":` + strings.Repeat("[", 100),
			reason: "must take at most 16384 bytes as JSON"},

		// With details.
		{name: "both set", text: `{}`, details: valStruct(map[string]any{"a": 1}),
			reason: "must not be set together with details (set one or the other)"},
		{name: "both set, details empty", text: `{"a":1}`, details: &structpb.Struct{},
			reason: "must not be set together with details (set one or the other)"},
	}
}

func TestDetailsJSONFieldTable(t *testing.T) {
	t.Parallel()
	for _, tc := range djCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Between two good insights, so the error must name index 1.
			good := func() *longhaulv1.Insight { in := valInsight(); in.Details = nil; return in }
			bad := valInsight()
			bad.Details, bad.DetailsJson = tc.details, tc.text
			ins := []*longhaulv1.Insight{good(), bad, good()}
			before := proto.Clone(bad)
			out, err := edge.ValidateInsights(valNow, tc.lim, ins)
			if !proto.Equal(before, bad) {
				t.Errorf("ValidateInsights changed its input")
			}
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("ValidateInsights: %v", err)
				}
				want := tc.want
				if want == "" {
					want = tc.text
				}
				if got := string(out[1].GetDetails()); got != want {
					t.Fatalf("stored\n %q\nwant\n %q", got, want)
				}
				valCheckConverted(t, bad, out[1])
				return
			}
			if out != nil {
				t.Errorf("got %d insights with an error; want none", len(out))
			}
			var fe *edge.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *edge.FieldError", err, err)
			}
			if fe.Index != 1 || fe.Field != "insights[1].details_json" || fe.Reason != tc.reason {
				t.Fatalf("got index %d field %q reason\n %q\nwant index 1 field %q reason\n %q",
					fe.Index, fe.Field, fe.Reason, "insights[1].details_json", tc.reason)
			}
			djCheckPrintable(t, fe.Reason)
			valCheckStatus(t, err, fe.Field, fe.Reason)
		})
	}
}

// TestDetailsJSONFieldConcurrent: scanners shared between goroutines keep
// no state from one call to the next.
func TestDetailsJSONFieldConcurrent(t *testing.T) {
	t.Parallel()
	cases := djCases()
	validate := func(tc djCase) string {
		in := valInsight()
		in.Details, in.DetailsJson = tc.details, tc.text
		out, err := edge.ValidateInsights(valNow, tc.lim, []*longhaulv1.Insight{in})
		if err != nil {
			return "refused: " + err.Error()
		}
		return "stored: " + string(out[0].GetDetails())
	}
	want := make([]string, len(cases))
	for i, tc := range cases {
		want[i] = validate(tc)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 400 {
				k := (g*7 + i*13) % len(cases)
				if got := validate(cases[k]); got != want[k] {
					t.Errorf("%s: %.200s, alone %.200s", cases[k].name, got, want[k])
					return
				}
			}
		})
	}
	wg.Wait()
}

// djCheckPrintable: FieldError promises printable, valid UTF-8.
func djCheckPrintable(t testing.TB, s string) {
	t.Helper()
	if !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		t.Fatalf("reason %q is not printable, valid UTF-8", s)
	}
}

// TestDetailsJSONFieldUnset: the empty string is details_json unset.
func TestDetailsJSONFieldUnset(t *testing.T) {
	t.Parallel()
	in := valInsight()
	in.DetailsJson = ""
	out, err := edge.ValidateInsights(valNow, edge.Limits{}, []*longhaulv1.Insight{in})
	if err != nil {
		t.Fatal(err)
	}
	valCheckDetailsMatch(t, in.GetDetails(), out[0].GetDetails())
	in.Details = nil
	out, err = edge.ValidateInsights(valNow, edge.Limits{}, []*longhaulv1.Insight{in})
	if err != nil || string(out[0].GetDetails()) != "{}" {
		t.Fatalf("neither set: %v, %v; want {}", out, err)
	}
}

// TestDetailsJSONFieldMatchesStruct: whatever details the Struct path accepts,
// details_json of json.Marshal of the same value is accepted and stored as
// the same bytes, however it is indented; what it stores decodes to the
// value sent.
func TestDetailsJSONFieldMatchesStruct(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		var lim edge.Limits
		if rapid.Bool().Draw(t, "small limit") {
			lim.MaxDetailsBytes = rapid.IntRange(1, 400).Draw(t, "limit")
		}
		d := detailsStruct(t, "details", 1)
		viaStruct := detailsValidate(t, lim, d)[0]
		if viaStruct.reason != "" {
			t.Skip("the Struct path refuses it:", viaStruct.reason)
		}
		text, err := json.Marshal(d.AsMap())
		if err != nil {
			t.Fatal(err)
		}
		if rapid.Bool().Draw(t, "indent") {
			var b bytes.Buffer
			ws := rapid.SampledFrom([]string{"", " ", "\t", "\r\n", " \n\t "}).Draw(t, "whitespace")
			if err := json.Indent(&b, text, ws, ws+ws); err != nil {
				t.Fatal(err)
			}
			text = append([]byte(ws), append(b.Bytes(), ws...)...)
		}
		in := valInsight()
		in.Details, in.DetailsJson = nil, string(text)
		out, err := edge.ValidateInsights(valNow, lim, []*longhaulv1.Insight{in})
		if err != nil {
			t.Fatalf("details_json %q refused, details %v accepted: %v", text, d, err)
		}
		if got := out[0].GetDetails(); !bytes.Equal(got, viaStruct.json) {
			t.Fatalf("details_json %q stored\n %s\nthe Struct path stored\n %s", text, got, viaStruct.json)
		}
		var got any
		if err := json.Unmarshal(out[0].GetDetails(), &got); err != nil || !reflect.DeepEqual(got, d.AsMap()) {
			t.Fatalf("stored %s decodes to %v (%v), want %v", out[0].GetDetails(), got, err, d.AsMap())
		}
	})
}

// FuzzDetailsJSONRaw: whatever text arrives as details_json, the edge does
// not panic, and it accepts exactly what djOracle (encoding/json and
// independent checks of what jsonb refuses) accepts, storing it as
// json.Compact writes it.
func FuzzDetailsJSONRaw(f *testing.F) {
	for _, tc := range djCases() {
		f.Add([]byte(tc.text))
	}
	for _, s := range []string{
		`{"a":"\\u0000","b":"\\ud800","\\\\":"\\\\u0000"}`,
		`{"x":[1,-2.5e-3,0,-0,1E400,0.0000001],"y":{"z":null}}`,
		`{"a":"\uD834\uDD1E","b":"\ud834\udd1e"}`,
		"{\"k\":\"\u2028\u2029\",\"l\":\"\\u2028\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		if len(text) == 0 {
			return // unset
		}
		for _, lim := range []edge.Limits{{}, {MaxDetailsBytes: 64}} {
			in := valInsight()
			in.Details, in.DetailsJson = nil, string(text)
			out, err := edge.ValidateInsights(valNow, lim, []*longhaulv1.Insight{in})
			maxBytes := lim.MaxDetailsBytes
			if maxBytes == 0 {
				maxBytes = edge.DefaultMaxDetailsBytes
			}
			why := djOracle(text, maxBytes)
			if err != nil {
				var fe *edge.FieldError
				if !errors.As(err, &fe) || fe.Field != "insights[0].details_json" {
					t.Fatalf("%q: error %v does not name insights[0].details_json", text, err)
				}
				djCheckPrintable(t, fe.Reason)
				if why == "" {
					t.Fatalf("%q (limit %d) refused (%s), but it is a JSON object jsonb takes as it is", text, maxBytes, fe.Reason)
				}
				continue
			}
			if why != "" {
				t.Fatalf("%q (limit %d) accepted, but %s", text, maxBytes, why)
			}
			got := out[0].GetDetails()
			var want bytes.Buffer
			if err := json.Compact(&want, text); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("%q stored as\n %q\nwant (json.Compact)\n %q", text, got, want.Bytes())
			}
			if !json.Valid(got) || len(got) > maxBytes || got[0] != '{' {
				t.Fatalf("%q stored as %q", text, got)
			}
		}
	})
}

// djEscape matches, left to right, every escape of a valid JSON text:
// outside strings there are no backslashes, and "\\" is one escape.
var djEscape = regexp.MustCompile(`\\u[0-9a-fA-F]{4}|\\.`)

// djOracle says why text cannot be stored as details_json, or "" when it
// can. It shares no code with the edge's scanner.
func djOracle(text []byte, maxBytes int) string {
	if !utf8.Valid(text) {
		return "it is not valid UTF-8"
	}
	if !json.Valid(text) {
		return "it is not valid JSON"
	}
	if t := bytes.TrimLeft(text, " \t\r\n"); t[0] != '{' {
		return "it is not an object"
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, text); err != nil || compact.Len() > maxBytes {
		return fmt.Sprintf("it takes %d bytes compact", compact.Len())
	}
	escapes := djEscape.FindAllIndex(text, -1)
	for i := 0; i < len(escapes); i++ {
		r, ok := djEscaped(text[escapes[i][0]:escapes[i][1]])
		switch {
		case !ok:
		case r == 0:
			return `it holds \u0000`
		case 0xd800 <= r && r < 0xdc00:
			if i+1 < len(escapes) && escapes[i+1][0] == escapes[i][1] {
				if lo, ok := djEscaped(text[escapes[i+1][0]:escapes[i+1][1]]); ok && 0xdc00 <= lo && lo < 0xe000 {
					i++
					continue
				}
			}
			return fmt.Sprintf("it holds a lone high surrogate %U", r)
		case 0xdc00 <= r && r < 0xe000:
			return fmt.Sprintf("it holds a lone low surrogate %U", r)
		}
	}
	// The structure, from encoding/json's tokens.
	type frame struct {
		keys      map[string]bool // nil for an array
		expectKey bool
	}
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "json.Decoder: " + err.Error()
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if s, ok := tok.(string); ok && top != nil && top.keys != nil && top.expectKey {
			if top.keys[s] {
				return fmt.Sprintf("it holds the key %q twice in one object", s)
			}
			top.keys[s] = true
			top.expectKey = false
			continue
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		// A value: the next token of an object is a key again.
		if top != nil && top.keys != nil {
			top.expectKey = true
		}
		switch v := tok.(type) {
		case json.Delim:
			f := &frame{}
			if v == '{' {
				f.keys, f.expectKey = map[string]bool{}, true
			}
			if stack = append(stack, f); len(stack) > edge.MaxDetailsDepth {
				return "it nests deeper than 32"
			}
		case json.Number:
			if !djNumericHolds(string(v)) {
				return "numeric does not hold " + string(v)
			}
		}
	}
	return ""
}

// djEscaped returns the code unit of a \uXXXX escape.
func djEscaped(esc []byte) (rune, bool) {
	if len(esc) != 6 {
		return 0, false
	}
	u, err := strconv.ParseUint(string(esc[2:]), 16, 16)
	return rune(u), err == nil
}

// djNumericHolds tells whether PostgreSQL's numeric_in accepts num: an
// exponent within ±(INT_MAX/2 - 1), at most 16383 digits after the decimal
// point once the exponent is applied, and the first digit that is not 0
// at most 10^131071 (a base-10000 weight of 32767).
func djNumericHolds(num string) bool {
	mant, exp := num, new(big.Int)
	if i := strings.IndexAny(num, "eE"); i >= 0 {
		mant = num[:i]
		exp.SetString(strings.TrimPrefix(num[i+1:], "+"), 10)
	}
	if exp.CmpAbs(big.NewInt(1<<30-2)) > 0 { // numeric_in: |exponent| >= INT_MAX/2 overflows
		return false
	}
	e := exp.Int64()
	intPart, frac, _ := strings.Cut(strings.TrimPrefix(mant, "-"), ".")
	if int64(len(frac))-e > 16383 {
		return false
	}
	digits := strings.TrimLeft(intPart+frac, "0")
	if digits == "" {
		return true
	}
	// digits × 10^(e - len(frac)): the first digit stands for 10^p.
	p := int64(len(digits)) - 1 + e - int64(len(frac))
	return p <= 4*32768-1
}

// valCheckInsightDetails checks the stored details of in, whichever of
// details and details_json it carried.
func valCheckInsightDetails(t *testing.T, in *longhaulv1.Insight, stored []byte) {
	t.Helper()
	if in.GetDetailsJson() == "" {
		valCheckDetailsMatch(t, in.GetDetails(), stored)
		return
	}
	var want bytes.Buffer
	if err := json.Compact(&want, []byte(in.GetDetailsJson())); err != nil || !bytes.Equal(stored, want.Bytes()) {
		t.Fatalf("details_json %q stored as %q, want %q (%v)", in.GetDetailsJson(), stored, want.Bytes(), err)
	}
	if why := djOracle(stored, edge.DefaultMaxDetailsBytes); why != "" {
		t.Fatalf("details_json stored as %q, but %s", stored, why)
	}
}

// BenchmarkDetailsWire compares, per insight, what the edge spends on
// details sent as a Struct and as details_json: unmarshalling the request
// and validating it (and, apart, the checker's marshalling). The details
// are primary.Synthetic's, about 200 bytes: {"id":…,"days_left":…,"note":"xxx…"};
// "none" sends no details at all, for what the rest of an insight costs.
func BenchmarkDetailsWire(b *testing.B) {
	const n = 100
	syn := primary.Synthetic(n, 0, 200, valNow, "bench")
	request := func(form string) *longhaulv1.PushRequest {
		req := &longhaulv1.PushRequest{}
		for _, s := range syn {
			in := valInsight()
			in.Details = nil
			var compact bytes.Buffer
			if err := json.Compact(&compact, s.Details); err != nil {
				b.Fatal(err)
			}
			switch form {
			case "struct":
				var m map[string]any
				if err := json.Unmarshal(s.Details, &m); err != nil {
					b.Fatal(err)
				}
				in.Details = valStruct(m)
			case "json":
				in.DetailsJson = compact.String()
			case "json-spaced": // as Synthetic writes it: a space after each colon
				in.DetailsJson = string(s.Details)
			case "none": // the floor: what the rest of the insight costs
			}
			req.Insights = append(req.Insights, in)
		}
		return req
	}
	for _, form := range []string{"struct", "json", "json-spaced", "none"} {
		req := request(form)
		wire, err := proto.Marshal(req)
		if err != nil {
			b.Fatal(err)
		}
		out, err := edge.ValidateInsights(valNow, edge.Limits{}, req.GetInsights())
		if err != nil {
			b.Fatal(err)
		}
		stored := 0
		for _, o := range out {
			stored += len(o.GetDetails())
		}
		b.Run(form+"/unmarshal+validate", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var got longhaulv1.PushRequest
				if err := proto.Unmarshal(wire, &got); err != nil {
					b.Fatal(err)
				}
				if _, err := edge.ValidateInsights(valNow, edge.Limits{}, got.GetInsights()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/insight")
			b.ReportMetric(float64(stored)/n, "details-bytes/insight")
		})
		b.Run(form+"/marshal", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := proto.Marshal(req); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/insight")
			b.ReportMetric(float64(len(wire))/n, "wire-bytes/insight")
		})
	}
}
