package edge_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"pgregory.net/rapid"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/edge"
)

// The edge encodes details itself, in the walk that checks them. The bytes
// are hashed, so they must be exactly json.Marshal(details.AsMap()); and the
// reasons it refuses details must stay what they were. These tests hold it
// to both: to json.Marshal directly, and to detailsRef, a copy of the
// checker that ran before the encoder existed, for the reasons.

// detailsResult is what ValidateInsights makes of one insight's details.
type detailsResult struct {
	json   []byte
	reason string // "" when accepted
}

func (r detailsResult) String() string {
	if r.reason != "" {
		return "refused: " + r.reason
	}
	return "accepted: " + string(r.json)
}

// detailsTB is what the helpers need of a *testing.T, *testing.B or
// *rapid.T.
type detailsTB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// goroutineTB lets a goroutine other than the test's fail the test.
type goroutineTB struct{ t *testing.T }

func (g goroutineTB) Helper() { g.t.Helper() }

func (g goroutineTB) Fatalf(format string, args ...any) {
	g.t.Helper()
	g.t.Errorf(format, args...)
	runtime.Goexit()
}

// detailsValidate runs ValidateInsights on one insight per element of ds, in
// one call, so outputs that shared a buffer would show.
func detailsValidate(t detailsTB, lim edge.Limits, ds ...*structpb.Struct) []detailsResult {
	t.Helper()
	res := make([]detailsResult, len(ds))
	ins := make([]*longhaulv1.Insight, len(ds))
	for i, d := range ds {
		ins[i] = valInsight()
		ins[i].Details = d
	}
	out, err := edge.ValidateInsights(valNow, lim, ins)
	if err == nil {
		for i, o := range out {
			res[i].json = o.GetDetails()
		}
		return res
	}
	// All or nothing: learn each insight's fate one at a time.
	for i, d := range ds {
		in := valInsight()
		in.Details = d
		out, err := edge.ValidateInsights(valNow, lim, []*longhaulv1.Insight{in})
		if err == nil {
			res[i].json = out[0].GetDetails()
			continue
		}
		var fe *edge.FieldError
		if !errors.As(err, &fe) || fe.Field != "insights[0].details" {
			t.Fatalf("details %v: error %v is not about insights[0].details", d, err)
		}
		res[i].reason = fe.Reason
	}
	return res
}

// detailsCheck checks what ValidateInsights made of d against the oracles.
func detailsCheck(t detailsTB, lim edge.Limits, d *structpb.Struct, got detailsResult) {
	t.Helper()
	maxBytes := lim.MaxDetailsBytes
	if maxBytes <= 0 {
		maxBytes = edge.DefaultMaxDetailsBytes
	}
	if want := detailsRef(d, maxBytes); got.reason != want.reason || string(got.json) != string(want.json) {
		t.Fatalf("details %v (limit %d)\n got %v\nwant %v", d, maxBytes, got, want)
	}
	if got.reason != "" {
		if !utf8.ValidString(got.reason) {
			t.Fatalf("reason %q is not valid UTF-8", got.reason)
		}
		return
	}
	// Independently of detailsRef, which also uses json.Marshal.
	want, err := json.Marshal(d.AsMap())
	if err != nil {
		t.Fatalf("details %v accepted, but json.Marshal refuses them: %v", d, err)
	}
	if string(got.json) != string(want) {
		t.Fatalf("details %v\n got %s\nwant %s", d, got.json, want)
	}
	if d != nil && len(got.json) > maxBytes { // nil is {} whatever the limit
		t.Fatalf("accepted %d bytes over the limit %d", len(got.json), maxBytes)
	}
}

// detailsSpecial are runes and bytes encoding/json treats specially, and
// those the JSON pointer in reasons escapes.
var detailsSpecial = []string{
	`"`, `\`, "\n", "\r", "\t", "\b", "\f", "\x01", "\x0b", "\x1b", "\x1f", "\x7f", " ",
	"<", ">", "&", "\u2028", "\u2029", "\u2027", "\u202a", "~", "/", "\ufffd", "\uffff",
	"é", "☃", "😀", "\U0010ffff", "a", "Z", "0", "\\u0000",
}

func detailsString(t *rapid.T, label string, bad bool) string {
	parts := rapid.SliceOfN(rapid.OneOf(
		rapid.SampledFrom(detailsSpecial),
		rapid.StringN(0, 4, -1),
		rapid.Map(rapid.Rune(), func(r rune) string { return string(r) }),
		rapid.Map(rapid.ByteRange(0x01, 0x7f), func(b byte) string { return string(rune(b)) }),
	), 0, 8).Draw(t, label)
	if bad && rapid.IntRange(0, 30).Draw(t, label+" bad") == 0 {
		// Rarely, what the validator refuses.
		bad := rapid.SampledFrom([]string{"\x00", "\xff", "\xe2\x80", "\xed\xa0\x80"}).Draw(t, label+" bad byte")
		at := rapid.IntRange(0, len(parts)).Draw(t, label+" bad at")
		parts = slices.Insert(parts, at, bad)
	}
	return strings.Join(parts, "")
}

func detailsNumber(t *rapid.T, label string) float64 {
	switch rapid.IntRange(0, 9).Draw(t, label+" kind") {
	case 0:
		return rapid.Float64().Draw(t, label)
	case 1:
		return float64(rapid.Int64().Draw(t, label))
	case 2:
		return float64(rapid.IntRange(-1000, 1000).Draw(t, label))
	case 3: // fractions
		return float64(rapid.IntRange(-1e6, 1e6).Draw(t, label)) / float64(rapid.IntRange(1, 1e4).Draw(t, label+" den"))
	case 4: // around the cutoffs of 'e' format, and powers of ten
		base := rapid.SampledFrom([]float64{1e-6, 1e21, 1e-7, 1e20, 1e22, 1e-5, 1, 1e100, 1e-100, 1e308, 5e-324}).Draw(t, label)
		f := base
		switch rapid.IntRange(0, 2).Draw(t, label+" step") {
		case 1:
			f = math.Nextafter(base, math.Inf(1))
		case 2:
			f = math.Nextafter(base, 0)
		}
		if rapid.Bool().Draw(t, label+" neg") {
			f = -f
		}
		return f
	case 5: // any bits: subnormals, huge, tiny
		f := math.Float64frombits(rapid.Uint64().Draw(t, label))
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0
		}
		return f
	case 6:
		return rapid.Float64Range(-1e-5, 1e-5).Draw(t, label)
	case 7:
		return rapid.SampledFrom([]float64{0, math.Copysign(0, -1), math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, 1 << 53, 1<<53 + 2, 0.1, 1.0 / 3}).Draw(t, label)
	case 8:
		if rapid.IntRange(0, 20).Draw(t, label+" bad") == 0 {
			return rapid.SampledFrom([]float64{math.NaN(), math.Inf(1), math.Inf(-1)}).Draw(t, label)
		}
		return rapid.Float64Range(-1e25, 1e25).Draw(t, label)
	default:
		return math.Ldexp(rapid.Float64Range(0.5, 1).Draw(t, label), rapid.IntRange(-1074, 1023).Draw(t, label+" exp"))
	}
}

func detailsValue(t *rapid.T, label string, depth int) *structpb.Value {
	top := 9
	if depth >= 4 {
		top = 6 // leaves only
	}
	switch rapid.IntRange(0, top).Draw(t, label) {
	case 0:
		return structpb.NewNullValue()
	case 1:
		return structpb.NewBoolValue(rapid.Bool().Draw(t, label+" bool"))
	case 2, 3:
		return structpb.NewNumberValue(detailsNumber(t, label+" number"))
	case 4, 5:
		return structpb.NewStringValue(detailsString(t, label+" string", true))
	case 6:
		return detailsOdd(t, label)
	case 7, 8:
		return structpb.NewStructValue(detailsStruct(t, label+" {}", depth+1))
	default:
		n := rapid.IntRange(0, 5).Draw(t, label+" len")
		l := &structpb.ListValue{}
		for i := range n {
			l.Values = append(l.Values, detailsValue(t, fmt.Sprintf("%s[%d]", label, i), depth+1))
		}
		return structpb.NewListValue(l)
	}
}

// detailsOdd returns values only Go code builds, and nesting near the depth
// limit.
func detailsOdd(t *rapid.T, label string) *structpb.Value {
	switch rapid.IntRange(0, 12).Draw(t, label+" odd") {
	case 0:
		return &structpb.Value{} // no kind
	case 1:
		return nil
	case 2:
		return structpb.NewStructValue(nil)
	case 3:
		return structpb.NewListValue(nil)
	case 4:
		return &structpb.Value{Kind: (*structpb.Value_NullValue)(nil)}
	case 5:
		return &structpb.Value{Kind: (*structpb.Value_BoolValue)(nil)}
	case 6:
		return &structpb.Value{Kind: &structpb.Value_NullValue{NullValue: 7}}
	case 7, 8:
		n := rapid.IntRange(26, 34).Draw(t, label+" depth")
		v := structpb.NewStringValue("leaf")
		for i := range n {
			if i%3 == 0 {
				v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
			} else {
				v = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"d": v}})
			}
		}
		return v
	default:
		return structpb.NewNumberValue(detailsNumber(t, label+" number"))
	}
}

func detailsStruct(t *rapid.T, label string, depth int) *structpb.Struct {
	n := rapid.IntRange(0, 6).Draw(t, label+" len")
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for i := range n {
		k := detailsString(t, fmt.Sprintf("%s key %d", label, i), true)
		s.Fields[k] = detailsValue(t, fmt.Sprintf("%s/%d", label, i), depth)
	}
	return s
}

// TestDetailsJSONProperty: whatever ValidateInsights accepts, it stores as
// json.Marshal(AsMap()); and it accepts and refuses, with the same reason, as
// the checker before the encoder.
func TestDetailsJSONProperty(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		var lim edge.Limits
		if rapid.Bool().Draw(t, "small limit") {
			lim.MaxDetailsBytes = rapid.IntRange(1, 400).Draw(t, "limit")
		}
		ds := make([]*structpb.Struct, rapid.IntRange(1, 3).Draw(t, "insights"))
		for i := range ds {
			if rapid.IntRange(0, 20).Draw(t, fmt.Sprintf("nil %d", i)) == 0 {
				continue
			}
			ds[i] = detailsStruct(t, fmt.Sprintf("details %d", i), 1)
		}
		for i, r := range detailsValidate(t, lim, ds...) {
			detailsCheck(t, lim, ds[i], r)
		}
	})
}

// TestDetailsJSONMarshal pins what encoding/json does, which the edge
// copies, so a change in a Go release shows here.
func TestDetailsJSONMarshal(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   any
		want string
	}{
		{"\b\f\n\r\t", `"\b\f\n\r\t"`},
		{"\x01\x0b\x1f\x7f", `"\u0001\u000b\u001f` + "\x7f" + `"`},
		{`<>&"\/`, `"\u003c\u003e\u0026\"\\/"`},
		{"\u2028\u2029\u2027\u202a😀", `"\u2028\u2029` + "\u2027\u202a😀" + `"`},
		{1e-6, `0.000001`},
		{math.Nextafter(1e-6, 0), `9.999999999999997e-7`},
		{1e-7, `1e-7`},
		{1e-10, `1e-10`},
		{math.Nextafter(1e21, 0), `999999999999999900000`},
		{1e21, `1e+21`},
		{-1e21, `-1e+21`},
		{math.Copysign(0, -1), `-0`},
		{5e-324, `5e-324`},
		{math.MaxFloat64, `1.7976931348623157e+308`},
		{float64(1 << 53), `9007199254740992`},
		{map[string]any{"b": 1, "a": "<"}, `{"a":"\u003c","b":1}`},
	} {
		in, want := tc.in, tc.want
		got, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("json.Marshal(%#v) = %s, want %s", in, got, want)
		}
		d := &structpb.Struct{Fields: map[string]*structpb.Value{}}
		v, err := structpb.NewValue(in)
		if err != nil {
			t.Fatal(err)
		}
		d.Fields["v"] = v
		r := detailsValidate(t, edge.Limits{}, d)[0]
		if want := `{"v":` + want + `}`; string(r.json) != want {
			t.Errorf("details of %#v = %v, want %s", in, r, want)
		}
	}
}

// TestDetailsJSONOdd covers values only Go code builds.
func TestDetailsJSONOdd(t *testing.T) {
	t.Parallel()
	for _, v := range []*structpb.Value{
		{Kind: (*structpb.Value_NullValue)(nil)},
		{Kind: (*structpb.Value_BoolValue)(nil)},
		{Kind: (*structpb.Value_NumberValue)(nil)},
		{Kind: (*structpb.Value_StringValue)(nil)},
		{Kind: (*structpb.Value_StructValue)(nil)},
		{Kind: (*structpb.Value_ListValue)(nil)},
		{Kind: &structpb.Value_NullValue{NullValue: 3}},
	} {
		d := &structpb.Struct{Fields: map[string]*structpb.Value{"v": v}}
		got := detailsValidate(t, edge.Limits{}, d)[0]
		want, err := json.Marshal(d.AsMap())
		if err != nil {
			t.Fatal(err)
		}
		if string(got.json) != string(want) {
			t.Errorf("details %v = %v, want %s", d, got, want)
		}
	}
}

// TestDetailsJSONConcurrent: walkers shared between goroutines keep no
// state from one call to the next.
func TestDetailsJSONConcurrent(t *testing.T) {
	t.Parallel()
	good := detailsBenchInsights(20)
	bad := valStruct(map[string]any{"a": []any{1, map[string]any{"b": strings.Repeat("<", 50) + "\x00"}}})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				ds := []*structpb.Struct{good[(g+i)%len(good)].GetDetails(), good[(g+2*i)%len(good)].GetDetails()}
				if i%3 == 0 {
					ds = append(ds, bad)
				}
				for j, r := range detailsValidate(goroutineTB{t}, edge.Limits{}, ds...) {
					detailsCheck(goroutineTB{t}, edge.Limits{}, ds[j], r)
				}
			}
		})
	}
	wg.Wait()
}

func FuzzDetailsJSON(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"a":1,"b":[true,false,null,"x"],"c":{"d":-0.0,"e":1e-7,"f":1e21,"g":123456789012345678901234}}`,
		`{"s":"\b\f\n\r\t\u0001\u001f\u007f<>&\"\\\/\u2028\u2029 é ☃ 😀"}`,
		`{"\u003c":"\u0000"}`,
		`{"k":"\ud800"}`,
		`{"n":[1e-6,9.99999e-7,1e20,1e-300,5e-324,1.7976931348623157e308,0.1,-3]}`,
		`{"a/b~c":[[[[{"x":[]}]]]]}`,
		`{"a":` + strings.Repeat(`[`, 31) + strings.Repeat(`]`, 31) + `}`,
		`{"a":` + strings.Repeat(`[`, 32) + strings.Repeat(`]`, 32) + `}`,
		`{"big":"` + strings.Repeat("<x>", 5000) + `"}`,
		`{"big":"` + strings.Repeat("x", 16370) + `<"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var d structpb.Struct
		if err := protojson.Unmarshal(body, &d); err != nil {
			t.Skipf("not a Struct: %v", err)
		}
		for _, lim := range []edge.Limits{{}, {MaxDetailsBytes: 64}} {
			detailsCheck(t, lim, &d, detailsValidate(t, lim, &d)[0])
		}
	})
}

// detailsBenchInsights returns n insights whose details are about 200 bytes
// of JSON in 3 to 5 fields, like what checkers send.
func detailsBenchInsights(n int) []*longhaulv1.Insight {
	ins := make([]*longhaulv1.Insight, n)
	for i := range ins {
		in := valInsight()
		m := map[string]any{
			"issuer":    fmt.Sprintf("CN=R%d, O=Let's Encrypt, OU=Issuing CA <ecdsa> & friends, C=US", i%13),
			"days_left": float64(i%90) - 3,
			"not_after": "2026-04-01T12:00:00Z",
		}
		if i%2 == 0 {
			m["chain"] = []any{"R3", "ISRG Root X1", "DST Root CA X3 <expired>"}
		}
		if i%3 == 0 {
			m["cipher"] = map[string]any{"name": "TLS_AES_128_GCM_SHA256", "bits": 128, "pfs": true}
		} else if i%3 == 1 {
			m["ratio"] = 0.125*float64(i) + 1e-9
		}
		in.Details = valStruct(m)
		ins[i] = in
	}
	return ins
}

// BenchmarkValidateInsightsDetails validates requests of 50 insights with
// about 200 bytes of details each. (BenchmarkValidateInsights, in
// validate_test.go, has 1000 insights with small details.)
func BenchmarkValidateInsightsDetails(b *testing.B) {
	const n = 50
	ins := detailsBenchInsights(n)
	out, err := edge.ValidateInsights(valNow, edge.Limits{}, ins)
	if err != nil {
		b.Fatal(err)
	}
	total := 0
	for _, o := range out {
		total += len(o.GetDetails())
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := edge.ValidateInsights(valNow, edge.Limits{}, ins); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/insight")
	b.ReportMetric(float64(total)/n, "details-bytes/insight")
}

// detailsRef is encodeDetails as it was before it encoded in its walk:
// check the tree, then json.Marshal(AsMap()). It is the oracle for the
// reasons details are refused. Typed nil variants, on which it panicked
// (other than Null and Bool), are left out of the tests that use it.
func detailsRef(details *structpb.Struct, maxBytes int) detailsResult {
	if details == nil {
		return detailsResult{json: []byte("{}")}
	}
	w := refWalker{maxBytes: maxBytes}
	if r := w.object(details, 1); r != "" {
		return detailsResult{reason: r}
	}
	b, err := json.Marshal(details.AsMap())
	if err != nil {
		return detailsResult{reason: "cannot be encoded as JSON: " + err.Error()}
	}
	if len(b) > maxBytes {
		return detailsResult{reason: w.tooBig(len(b))}
	}
	return detailsResult{json: b}
}

type refWalker struct {
	maxBytes int
	size     int
	path     []string
}

func (w *refWalker) tooBig(n int) string {
	if n == 0 {
		return fmt.Sprintf("must take at most %d bytes as JSON", w.maxBytes)
	}
	return fmt.Sprintf("must take at most %d bytes as JSON, got %d", w.maxBytes, n)
}

func (w *refWalker) grow(n int) string {
	w.size += n
	if w.size > w.maxBytes {
		return w.tooBig(0)
	}
	return ""
}

var refPointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

func (w *refWalker) at() string {
	var b strings.Builder
	for _, p := range w.path {
		b.WriteByte('/')
		b.WriteString(refPointerEscaper.Replace(p))
		if b.Len() > 120 {
			break
		}
	}
	s := b.String()
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	if s == "" {
		s = "/"
	}
	return strconv.Quote(s)
}

func (w *refWalker) text(what, s string) string {
	if strings.IndexByte(s, 0) >= 0 {
		return what + " at " + w.at() + ` must not contain NUL bytes (PostgreSQL jsonb refuses \u0000)`
	}
	if !utf8.ValidString(s) {
		return what + " at " + w.at() + " must be valid UTF-8"
	}
	return ""
}

func (w *refWalker) object(s *structpb.Struct, depth int) string {
	if depth > edge.MaxDetailsDepth {
		return fmt.Sprintf("must not nest deeper than %d levels (at %s)", edge.MaxDetailsDepth, w.at())
	}
	if r := w.grow(2); r != "" {
		return r
	}
	keys := make([]string, 0, len(s.GetFields()))
	for k := range s.GetFields() {
		if r := w.grow(len(k) + 3); r != "" {
			return r
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		w.path = append(w.path, k)
		if r := w.text("key", k); r != "" {
			return r
		}
		if r := w.value(s.GetFields()[k], depth); r != "" {
			return r
		}
		w.path = w.path[:len(w.path)-1]
	}
	return ""
}

func (w *refWalker) list(l *structpb.ListValue, depth int) string {
	if depth > edge.MaxDetailsDepth {
		return fmt.Sprintf("must not nest deeper than %d levels (at %s)", edge.MaxDetailsDepth, w.at())
	}
	if r := w.grow(2); r != "" {
		return r
	}
	for i, v := range l.GetValues() {
		w.path = append(w.path, strconv.Itoa(i))
		if r := w.value(v, depth); r != "" {
			return r
		}
		w.path = w.path[:len(w.path)-1]
	}
	return ""
}

func (w *refWalker) value(v *structpb.Value, depth int) string {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return w.grow(len("null"))
	case *structpb.Value_BoolValue:
		return w.grow(len("true"))
	case *structpb.Value_NumberValue:
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			return "number at " + w.at() + " must be finite (JSON has no NaN or Infinity)"
		}
		return w.grow(1)
	case *structpb.Value_StringValue:
		if r := w.text("string", k.StringValue); r != "" {
			return r
		}
		return w.grow(len(k.StringValue) + 2)
	case *structpb.Value_StructValue:
		return w.object(k.StructValue, depth+1)
	case *structpb.Value_ListValue:
		return w.list(k.ListValue, depth+1)
	default:
		return "value at " + w.at() + " has no kind set"
	}
}
