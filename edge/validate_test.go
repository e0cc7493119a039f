package edge_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/edge"
)

// valNow is the edge's clock in these tests (and the fuzz targets): fixed,
// with nanoseconds, so truncation shows.
var valNow = time.Date(2026, 3, 4, 5, 6, 7, 891_234_567, time.UTC)

func valInsight() *longhaulv1.Insight {
	return &longhaulv1.Insight{
		AccountId:  "acct-42",
		Asset:      "shop.example.com",
		Kind:       "tls.expiry",
		Subject:    "443/tcp",
		Severity:   longhaulv1.Severity_HIGH,
		Details:    valStruct(map[string]any{"days_left": 3, "issuer": "Let's Encrypt", "chain": []any{"R3", "ISRG Root X1"}}),
		ObservedAt: timestamppb.New(valNow.Add(-time.Minute)),
		ScanId:     "scan-7",
		Checker:    "tls",
	}
}

func valCompletion() *longhaulv1.ScanCompletion {
	return &longhaulv1.ScanCompletion{
		ScanId:       "scan-7",
		AccountId:    "acct-42",
		Asset:        "shop.example.com",
		Checker:      "tls",
		InsightCount: 12,
		// Whole microseconds, so a good completion comes back as it went in.
		StartedAt:  timestamppb.New(valNow.Add(-time.Hour).Truncate(time.Microsecond)),
		FinishedAt: timestamppb.New(valNow.Add(-time.Minute).Truncate(time.Microsecond)),
	}
}

func valStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

// valNested returns details nested depth levels deep, the details object
// itself being level 1; list alternates objects and lists.
func valNested(depth int, list bool) *structpb.Struct {
	var v *structpb.Value = structpb.NewStringValue("leaf")
	for i := depth; i > 1; i-- {
		if list && i%2 == 0 {
			v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
		} else {
			v = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"n": v}})
		}
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{"n": v}}
}

// valStringFields are the insight's text fields with their limits.
var valStringFields = []struct {
	name string
	max  int
	set  func(*longhaulv1.Insight, string)
}{
	{"account_id", edge.MaxAccountIDBytes, func(in *longhaulv1.Insight, s string) { in.AccountId = s }},
	{"asset", edge.MaxAssetBytes, func(in *longhaulv1.Insight, s string) { in.Asset = s }},
	{"kind", edge.MaxKindBytes, func(in *longhaulv1.Insight, s string) { in.Kind = s }},
	{"subject", edge.MaxSubjectBytes, func(in *longhaulv1.Insight, s string) { in.Subject = s }},
	{"scan_id", edge.MaxScanIDBytes, func(in *longhaulv1.Insight, s string) { in.ScanId = s }},
	{"checker", edge.MaxCheckerBytes, func(in *longhaulv1.Insight, s string) { in.Checker = s }},
}

type valInsightCase struct {
	name   string
	lim    edge.Limits
	mutate func(*longhaulv1.Insight)
	field  string // relative to the insight; "" for a good case
	reason string // a part of the reason
}

func valInsightCases() []valInsightCase {
	var cases []valInsightCase
	for _, f := range valStringFields {
		set := f.set
		bad := func(name, val, reason string) {
			cases = append(cases, valInsightCase{name: f.name + "/" + name, mutate: func(in *longhaulv1.Insight) { set(in, val) }, field: f.name, reason: reason})
		}
		good := func(name, val string) {
			cases = append(cases, valInsightCase{name: f.name + "/" + name, mutate: func(in *longhaulv1.Insight) { set(in, val) }})
		}
		bad("empty", "", "is required")
		bad("NUL", "a\x00b", "must not contain NUL bytes")
		bad("only NUL", "\x00", "must not contain NUL bytes")
		bad("invalid UTF-8", "caf\xff", "must be valid UTF-8")
		bad("truncated rune", "caf\xc3", "must be valid UTF-8")
		bad("surrogate", "\xed\xa0\x80", "must be valid UTF-8")
		bad("ESC", "a\x1b[31m", "control characters (found U+001B at byte 1)")
		bad("tab", "a\tb", "control characters")
		bad("newline", "a\n", "control characters")
		bad("DEL", "a\x7f", "control characters (found U+007F")
		bad("too long", strings.Repeat("a", f.max+1), fmt.Sprintf("must be at most %d bytes, got %d", f.max, f.max+1))
		bad("too long in bytes, not runes", strings.Repeat("é", f.max/2+1), "must be at most")
		good("at limit", strings.Repeat("a", f.max))
		good("unicode", "ünïcödé-☃")
		good("space", "a b")
	}
	setSev := func(s longhaulv1.Severity) func(*longhaulv1.Insight) {
		return func(in *longhaulv1.Insight) { in.Severity = s }
	}
	setDetails := func(d *structpb.Struct) func(*longhaulv1.Insight) {
		return func(in *longhaulv1.Insight) { in.Details = d }
	}
	at := func(d time.Duration) func(*longhaulv1.Insight) {
		return func(in *longhaulv1.Insight) { in.ObservedAt = timestamppb.New(valNow.Add(d)) }
	}
	setTS := func(ts *timestamppb.Timestamp) func(*longhaulv1.Insight) {
		return func(in *longhaulv1.Insight) { in.ObservedAt = ts }
	}
	num := func(f float64) *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(f)}}
	}
	// {"a":"xxx…"} is 8 bytes plus the x's.
	sized := func(n int) *structpb.Struct { return valStruct(map[string]any{"a": strings.Repeat("x", n-8)}) }
	cases = append(cases,
		valInsightCase{name: "severity/LOW", mutate: setSev(longhaulv1.Severity_LOW)},
		valInsightCase{name: "severity/CRITICAL", mutate: setSev(longhaulv1.Severity_CRITICAL)},
		valInsightCase{name: "severity/0", mutate: setSev(0), field: "severity", reason: "got SEVERITY_UNSPECIFIED"},
		valInsightCase{name: "severity/9", mutate: setSev(9), field: "severity", reason: "got 9"},
		valInsightCase{name: "severity/-1", mutate: setSev(-1), field: "severity", reason: "got -1"},

		valInsightCase{name: "details/nil", mutate: setDetails(nil)},
		valInsightCase{name: "details/empty", mutate: setDetails(&structpb.Struct{})},
		valInsightCase{name: "details/NaN", mutate: setDetails(num(math.NaN())), field: "details", reason: `number at "/n" must be finite`},
		valInsightCase{name: "details/+Inf", mutate: setDetails(num(math.Inf(1))), field: "details", reason: "must be finite"},
		valInsightCase{name: "details/-Inf", mutate: setDetails(num(math.Inf(-1))), field: "details", reason: "must be finite"},
		valInsightCase{name: "details/NaN nested", mutate: setDetails(valStruct(map[string]any{"a": []any{1, map[string]any{"b": math.NaN()}}})),
			field: "details", reason: `number at "/a/1/b" must be finite`},
		valInsightCase{name: "details/NUL in key", mutate: setDetails(valStruct(map[string]any{"\x00": 1})), field: "details", reason: `key at "/\x00" must not contain NUL bytes`},
		valInsightCase{name: "details/NUL in nested key", mutate: setDetails(valStruct(map[string]any{"a": map[string]any{"b\x00c": 1}})),
			field: "details", reason: `key at "/a/b\x00c" must not contain NUL`},
		valInsightCase{name: "details/NUL in value", mutate: setDetails(valStruct(map[string]any{"a": "x\x00"})), field: "details", reason: `string at "/a" must not contain NUL bytes`},
		valInsightCase{name: "details/NUL in nested value", mutate: setDetails(valStruct(map[string]any{"a/b": map[string]any{"c~d": []any{"ok", "x\x00"}}})),
			field: "details", reason: `string at "/a~1b/c~0d/1" must not contain NUL bytes`},
		// structpb.NewStruct refuses invalid UTF-8; a Go caller can still build it.
		valInsightCase{name: "details/invalid UTF-8 key", mutate: setDetails(&structpb.Struct{Fields: map[string]*structpb.Value{"k\xff": structpb.NewBoolValue(true)}}),
			field: "details", reason: `key at "/k\xff" must be valid UTF-8`},
		valInsightCase{name: "details/invalid UTF-8 value", mutate: setDetails(&structpb.Struct{Fields: map[string]*structpb.Value{"a": {Kind: &structpb.Value_StringValue{StringValue: "\xff"}}}}),
			field: "details", reason: `string at "/a" must be valid UTF-8`},
		valInsightCase{name: "details/value without kind", mutate: setDetails(&structpb.Struct{Fields: map[string]*structpb.Value{"a": {}}}),
			field: "details", reason: "has no kind set"},
		valInsightCase{name: "details/nil value", mutate: setDetails(&structpb.Struct{Fields: map[string]*structpb.Value{"a": nil}}),
			field: "details", reason: "has no kind set"},
		valInsightCase{name: "details/control characters are fine", mutate: setDetails(valStruct(map[string]any{"a\n": "\x01\t\x7f"}))},
		valInsightCase{name: "details/at limit", mutate: setDetails(sized(edge.DefaultMaxDetailsBytes))},
		valInsightCase{name: "details/too big", mutate: setDetails(sized(edge.DefaultMaxDetailsBytes + 1)),
			field: "details", reason: "must take at most 16384 bytes as JSON"},
		valInsightCase{name: "details/too big by escaping", mutate: setDetails(valStruct(map[string]any{"a": strings.Repeat("x", 16371) + "<"})),
			field: "details", reason: "must take at most 16384 bytes as JSON, got 16385"},
		valInsightCase{name: "details/far too big", mutate: setDetails(sized(1 << 20)), field: "details", reason: "must take at most 16384 bytes as JSON"},
		valInsightCase{name: "details/many keys", mutate: func(in *longhaulv1.Insight) {
			m := map[string]any{}
			for i := range 5000 {
				m[fmt.Sprint(i)] = i
			}
			in.Details = valStruct(m)
		}, field: "details", reason: "must take at most 16384 bytes"},
		valInsightCase{name: "details/escaping counts", lim: edge.Limits{MaxDetailsBytes: 20},
			mutate: setDetails(valStruct(map[string]any{"a": "<<<"})), field: "details", reason: "got 26"}, // {"a":"\u003c\u003c\u003c"}
		valInsightCase{name: "details/smaller limit", lim: edge.Limits{MaxDetailsBytes: 10}, mutate: setDetails(sized(11)), field: "details", reason: "at most 10 bytes"},
		valInsightCase{name: "details/depth 32", mutate: setDetails(valNested(32, false))},
		valInsightCase{name: "details/depth 33", mutate: setDetails(valNested(33, false)), field: "details", reason: "must not nest deeper than 32 levels"},
		valInsightCase{name: "details/depth 32 with lists", mutate: setDetails(valNested(32, true))},
		valInsightCase{name: "details/depth 33 with lists", mutate: setDetails(valNested(33, true)), field: "details", reason: "must not nest deeper than 32 levels"},
		valInsightCase{name: "details/depth 1000", mutate: setDetails(valNested(1000, true)), field: "details", reason: "must not nest deeper"},

		valInsightCase{name: "observed_at/missing", mutate: setTS(nil), field: "observed_at", reason: "is required"},
		valInsightCase{name: "observed_at/zero", mutate: setTS(&timestamppb.Timestamp{}), field: "observed_at", reason: "is required (got the zero timestamp"},
		valInsightCase{name: "observed_at/now", mutate: at(0)},
		valInsightCase{name: "observed_at/at skew limit", mutate: at(edge.DefaultMaxClockSkew)},
		valInsightCase{name: "observed_at/past skew limit", mutate: at(edge.DefaultMaxClockSkew + time.Nanosecond),
			field: "observed_at", reason: "must not be more than 15m0s ahead of the edge's clock"},
		valInsightCase{name: "observed_at/far future", mutate: at(100 * 24 * time.Hour), field: "observed_at", reason: "ahead of the edge's clock"},
		valInsightCase{name: "observed_at/year 9999", mutate: setTS(timestamppb.New(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC))),
			field: "observed_at", reason: "ahead of the edge's clock"},
		valInsightCase{name: "observed_at/at age limit", mutate: at(-edge.DefaultMaxAge)},
		valInsightCase{name: "observed_at/very old", mutate: at(-edge.DefaultMaxAge - time.Nanosecond), field: "observed_at", reason: "must not be older than 8760h0m0s"},
		valInsightCase{name: "observed_at/1999", mutate: setTS(timestamppb.New(time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC))), field: "observed_at", reason: "older"},
		valInsightCase{name: "observed_at/nanos 1e9", mutate: setTS(&timestamppb.Timestamp{Seconds: valNow.Unix(), Nanos: 1e9}),
			field: "observed_at", reason: "is not a valid timestamp"},
		valInsightCase{name: "observed_at/nanos -1", mutate: setTS(&timestamppb.Timestamp{Seconds: valNow.Unix(), Nanos: -1}),
			field: "observed_at", reason: "is not a valid timestamp"},
		valInsightCase{name: "observed_at/seconds out of range", mutate: setTS(&timestamppb.Timestamp{Seconds: math.MaxInt64}),
			field: "observed_at", reason: "is not a valid timestamp"},
		valInsightCase{name: "observed_at/negative seconds out of range", mutate: setTS(&timestamppb.Timestamp{Seconds: math.MinInt64}),
			field: "observed_at", reason: "is not a valid timestamp"},
		valInsightCase{name: "observed_at/tighter skew", lim: edge.Limits{MaxClockSkew: time.Second}, mutate: at(2 * time.Second),
			field: "observed_at", reason: "more than 1s ahead"},
		valInsightCase{name: "observed_at/tighter age", lim: edge.Limits{MaxAge: time.Hour}, mutate: at(-2 * time.Hour),
			field: "observed_at", reason: "older than 1h0m0s"},
	)
	return cases
}

func TestValidateInsightsTable(t *testing.T) {
	t.Parallel()
	for _, tc := range valInsightCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The case's insight sits between two good ones, so the error
			// must name index 1.
			bad := valInsight()
			tc.mutate(bad)
			// The neighbours have no details, to fit small MaxDetailsBytes.
			good := func() *longhaulv1.Insight { in := valInsight(); in.Details = nil; return in }
			ins := []*longhaulv1.Insight{good(), bad, good()}
			before := proto.Clone(bad)
			out, err := edge.ValidateInsights(valNow, tc.lim, ins)
			if !proto.Equal(before, bad) {
				t.Errorf("ValidateInsights changed its input")
			}
			if tc.field == "" {
				if err != nil {
					t.Fatalf("ValidateInsights: %v", err)
				}
				if len(out) != len(ins) {
					t.Fatalf("got %d insights, want %d", len(out), len(ins))
				}
				valCheckConverted(t, bad, out[1])
				return
			}
			if out != nil {
				t.Errorf("got %d insights with an error; want none", len(out))
			}
			valCheckFieldError(t, err, 1, "insights[1]."+tc.field, tc.reason)
		})
	}
}

// valCheckConverted checks that b is in, converted.
func valCheckConverted(t *testing.T, in *longhaulv1.Insight, b *longhaulv1.BatchInsight) {
	t.Helper()
	if b.GetAccountId() != in.GetAccountId() || b.GetAsset() != in.GetAsset() || b.GetKind() != in.GetKind() ||
		b.GetSubject() != in.GetSubject() || b.GetScanId() != in.GetScanId() || b.GetChecker() != in.GetChecker() ||
		b.GetSeverity() != in.GetSeverity() {
		t.Errorf("converted insight differs:\n in: %v\nout: %v", in, b)
	}
	if want := in.GetObservedAt().AsTime().UnixMicro(); b.GetObservedAtUnixMicros() != want {
		t.Errorf("observed_at_unix_micros = %d, want %d", b.GetObservedAtUnixMicros(), want)
	}
	valCheckInsightDetails(t, in, b.GetDetails())
}

func valCheckFieldError(t *testing.T, err error, index int, field, reason string) {
	t.Helper()
	var fe *edge.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *edge.FieldError", err, err)
	}
	if fe.Index != index || fe.Field != field {
		t.Errorf("error names index %d field %q, want %d %q (%v)", fe.Index, fe.Field, index, field, err)
	}
	if !strings.Contains(fe.Reason, reason) {
		t.Errorf("reason %q does not contain %q", fe.Reason, reason)
	}
	if want := field + ": " + fe.Reason; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
	valCheckStatus(t, err, field, fe.Reason)
}

// valCheckStatus checks what gRPC and grpc-gateway make of err.
func valCheckStatus(t *testing.T, err error, field, reason string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		t.Fatalf("status of %v = %v, %v; want InvalidArgument", err, st, ok)
	}
	if st.Message() != err.Error() {
		t.Errorf("status message %q, want %q", st.Message(), err.Error())
	}
	// gRPC sends the status as protobuf, which needs valid UTF-8.
	if _, merr := proto.Marshal(st.Proto()); merr != nil {
		t.Errorf("status does not marshal: %v", merr)
	}
	var br *errdetails.BadRequest
	for _, d := range st.Details() {
		if b, ok := d.(*errdetails.BadRequest); ok {
			br = b
		}
	}
	if br == nil || len(br.GetFieldViolations()) != 1 {
		t.Fatalf("status details %v: want one BadRequest with one violation", st.Details())
	}
	if v := br.GetFieldViolations()[0]; v.GetField() != field || v.GetDescription() != reason {
		t.Errorf("violation %v, want field %q description %q", v, field, reason)
	}
}

func TestValidateInsightsList(t *testing.T) {
	t.Parallel()
	many := func(n int) []*longhaulv1.Insight {
		ins := make([]*longhaulv1.Insight, n)
		for i := range ins {
			ins[i] = valInsight()
		}
		return ins
	}
	for _, tc := range []struct {
		name   string
		lim    edge.Limits
		ins    []*longhaulv1.Insight
		index  int
		field  string
		reason string
	}{
		{name: "nil", ins: nil, index: -1, field: "insights", reason: "at least one insight is required"},
		{name: "empty", ins: []*longhaulv1.Insight{}, index: -1, field: "insights", reason: "at least one insight is required"},
		{name: "one", ins: many(1)},
		{name: "default max", ins: many(edge.DefaultMaxInsightsPerRequest)},
		{name: "over default max", ins: make([]*longhaulv1.Insight, edge.DefaultMaxInsightsPerRequest+1),
			index: -1, field: "insights", reason: "at most 10000 insights per request, got 10001"},
		{name: "custom max", lim: edge.Limits{MaxInsightsPerRequest: 3}, ins: many(3)},
		{name: "over custom max", lim: edge.Limits{MaxInsightsPerRequest: 3}, ins: many(4),
			index: -1, field: "insights", reason: "at most 3 insights per request, got 4"},
		{name: "negative max means default", lim: edge.Limits{MaxInsightsPerRequest: -1}, ins: many(5)},
		{name: "nil insight", ins: append(many(3), nil), index: 3, field: "insights[3]", reason: "must not be null"},
		{name: "first of several problems", ins: func() []*longhaulv1.Insight {
			ins := many(5)
			ins[2].Subject = "a\x00"
			ins[2].Kind = ""
			ins[4].Asset = ""
			return ins
		}(), index: 2, field: "insights[2].kind", reason: "is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := edge.ValidateInsights(valNow, tc.lim, tc.ins)
			if tc.field == "" {
				if err != nil || len(out) != len(tc.ins) {
					t.Fatalf("ValidateInsights = %d insights, %v; want %d, nil", len(out), err, len(tc.ins))
				}
				return
			}
			if out != nil {
				t.Errorf("got %d insights with an error", len(out))
			}
			valCheckFieldError(t, err, tc.index, tc.field, tc.reason)
		})
	}
}

func TestValidateInsightsErrorMessage(t *testing.T) {
	t.Parallel()
	ins := []*longhaulv1.Insight{valInsight(), valInsight(), valInsight(), valInsight()}
	ins[3].Subject = "x\x00"
	_, err := edge.ValidateInsights(valNow, edge.Limits{}, ins)
	if got, want := fmt.Sprint(err), "insights[3].subject: must not contain NUL bytes"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
	// Wrapped, it still answers InvalidArgument.
	wrapped := fmt.Errorf("edge: push: %w", err)
	if status.Code(wrapped) != codes.InvalidArgument {
		t.Errorf("code of wrapped error = %v", status.Code(wrapped))
	}
}

func TestValidateInsightsDetailsJSON(t *testing.T) {
	t.Parallel()
	build := func() *structpb.Struct {
		return valStruct(map[string]any{
			"zeta": 1, "alpha": []any{true, nil, "x", 2.5, map[string]any{"b": 1, "a": 2}},
			"mid": map[string]any{"y": "<&>", "x": math.Copysign(0, -1), "big": 1e21, "small": 1e-7},
			"ünï": "☃", "ctl": "\x01\n",
		})
	}
	const want = `{"alpha":[true,null,"x",2.5,{"a":2,"b":1}],"ctl":"\u0001\n",` +
		`"mid":{"big":1e+21,"small":1e-7,"x":-0,"y":"\u003c\u0026\u003e"},"zeta":1,"ünï":"☃"}`
	for i := range 50 {
		in := valInsight()
		in.Details = build()
		out, err := edge.ValidateInsights(valNow, edge.Limits{}, []*longhaulv1.Insight{in})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(out[0].GetDetails()); got != want {
			t.Fatalf("run %d: details\n got %s\nwant %s", i, got, want)
		}
	}
	// The same Struct after a trip through the wire gives the same bytes.
	in := valInsight()
	in.Details = build()
	wire, err := proto.Marshal(&longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{in}})
	if err != nil {
		t.Fatal(err)
	}
	var req longhaulv1.PushRequest
	if err := proto.Unmarshal(wire, &req); err != nil {
		t.Fatal(err)
	}
	out, err := edge.ValidateInsights(valNow, edge.Limits{}, req.GetInsights())
	if err != nil {
		t.Fatal(err)
	}
	if got := string(out[0].GetDetails()); got != want {
		t.Errorf("after the wire: details\n got %s\nwant %s", got, want)
	}

	for _, tc := range []struct {
		details *structpb.Struct
		want    string
	}{
		{nil, `{}`},
		{&structpb.Struct{}, `{}`},
		{&structpb.Struct{Fields: map[string]*structpb.Value{"s": structpb.NewStructValue(nil), "l": structpb.NewListValue(nil)}}, `{"l":[],"s":{}}`},
	} {
		in := valInsight()
		in.Details = tc.details
		out, err := edge.ValidateInsights(valNow, edge.Limits{}, []*longhaulv1.Insight{in})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(out[0].GetDetails()); got != tc.want {
			t.Errorf("details %v = %s, want %s", tc.details, got, tc.want)
		}
	}
}

func TestValidateInsightsTruncatesToMicros(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ts   *timestamppb.Timestamp
		want int64
	}{
		{&timestamppb.Timestamp{Seconds: valNow.Unix() - 10, Nanos: 123_456_789}, (valNow.Unix()-10)*1e6 + 123_456},
		{&timestamppb.Timestamp{Seconds: valNow.Unix() - 10, Nanos: 999_999_999}, (valNow.Unix()-10)*1e6 + 999_999},
		{&timestamppb.Timestamp{Seconds: valNow.Unix() - 10, Nanos: 999}, (valNow.Unix() - 10) * 1e6},
		{&timestamppb.Timestamp{Seconds: valNow.Unix() - 10}, (valNow.Unix() - 10) * 1e6},
	} {
		in := valInsight()
		in.ObservedAt = tc.ts
		out, err := edge.ValidateInsights(valNow, edge.Limits{}, []*longhaulv1.Insight{in})
		if err != nil {
			t.Fatal(err)
		}
		if got := out[0].GetObservedAtUnixMicros(); got != tc.want {
			t.Errorf("%v: observed_at_unix_micros = %d, want %d", tc.ts, got, tc.want)
		}
	}
}

func TestValidateCompletion(t *testing.T) {
	t.Parallel()
	// micros is valNow+d in whole microseconds; raw keeps the nanoseconds.
	micros := func(d time.Duration) *timestamppb.Timestamp {
		return timestamppb.New(time.UnixMicro(valNow.Add(d).UnixMicro()))
	}
	raw := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(valNow.Add(d)) }
	ts := micros
	for _, tc := range []struct {
		name   string
		mutate func(*longhaulv1.ScanCompletion)
		want   func(*longhaulv1.ScanCompletion) // what the returned clone must be, given the input
		field  string
		reason string
	}{
		{name: "good"},
		{name: "zero insights", mutate: func(c *longhaulv1.ScanCompletion) { c.InsightCount = 0 }},
		{name: "max insights", mutate: func(c *longhaulv1.ScanCompletion) { c.InsightCount = edge.MaxScanInsightCount }},
		{name: "too many insights", mutate: func(c *longhaulv1.ScanCompletion) { c.InsightCount = edge.MaxScanInsightCount + 1 },
			field: "insight_count", reason: "must be between 0 and 10000000, got 10000001"},
		{name: "negative insights", mutate: func(c *longhaulv1.ScanCompletion) { c.InsightCount = -1 },
			field: "insight_count", reason: "got -1"},
		{name: "no scan_id", mutate: func(c *longhaulv1.ScanCompletion) { c.ScanId = "" }, field: "scan_id", reason: "is required"},
		{name: "no account_id", mutate: func(c *longhaulv1.ScanCompletion) { c.AccountId = "" }, field: "account_id", reason: "is required"},
		{name: "no asset", mutate: func(c *longhaulv1.ScanCompletion) { c.Asset = "" }, field: "asset", reason: "is required"},
		{name: "no checker", mutate: func(c *longhaulv1.ScanCompletion) { c.Checker = "" }, field: "checker", reason: "is required"},
		{name: "NUL scan_id", mutate: func(c *longhaulv1.ScanCompletion) { c.ScanId = "s\x00" }, field: "scan_id", reason: "NUL"},
		{name: "invalid UTF-8 asset", mutate: func(c *longhaulv1.ScanCompletion) { c.Asset = "\xff" }, field: "asset", reason: "UTF-8"},
		{name: "control account_id", mutate: func(c *longhaulv1.ScanCompletion) { c.AccountId = "a\r" }, field: "account_id", reason: "control"},
		{name: "long checker", mutate: func(c *longhaulv1.ScanCompletion) { c.Checker = strings.Repeat("c", edge.MaxCheckerBytes+1) },
			field: "checker", reason: "at most 64 bytes"},
		{name: "no times", mutate: func(c *longhaulv1.ScanCompletion) { c.StartedAt, c.FinishedAt = nil, nil },
			want: func(c *longhaulv1.ScanCompletion) { c.FinishedAt = micros(0) }},
		{name: "no finished_at", mutate: func(c *longhaulv1.ScanCompletion) { c.FinishedAt = nil },
			want: func(c *longhaulv1.ScanCompletion) { c.FinishedAt = micros(0) }},
		{name: "started ahead, no finished_at", mutate: func(c *longhaulv1.ScanCompletion) {
			c.StartedAt, c.FinishedAt = raw(time.Minute+1234*time.Nanosecond), nil
		}, want: func(c *longhaulv1.ScanCompletion) {
			c.StartedAt, c.FinishedAt = micros(time.Minute+1234*time.Nanosecond), micros(time.Minute+1234*time.Nanosecond)
		}},
		{name: "times truncated", mutate: func(c *longhaulv1.ScanCompletion) {
			c.StartedAt, c.FinishedAt = raw(-time.Hour+999*time.Nanosecond), raw(-time.Minute+1999*time.Nanosecond)
		}, want: func(c *longhaulv1.ScanCompletion) {
			c.StartedAt, c.FinishedAt = micros(-time.Hour+999*time.Nanosecond), micros(-time.Minute+1999*time.Nanosecond)
			if c.GetStartedAt().GetNanos()%1000 != 0 || c.GetFinishedAt().GetNanos()%1000 != 0 {
				panic("micros does not truncate")
			}
		}},
		{name: "same start and finish", mutate: func(c *longhaulv1.ScanCompletion) { c.StartedAt, c.FinishedAt = ts(-time.Minute), ts(-time.Minute) }},
		{name: "finished before started", mutate: func(c *longhaulv1.ScanCompletion) { c.StartedAt, c.FinishedAt = ts(-time.Minute), ts(-time.Hour) },
			field: "finished_at", reason: "must not be before started_at"},
		{name: "finished only", mutate: func(c *longhaulv1.ScanCompletion) { c.StartedAt = nil }},
		{name: "started_at invalid", mutate: func(c *longhaulv1.ScanCompletion) { c.StartedAt = &timestamppb.Timestamp{Nanos: -5} },
			field: "started_at", reason: "is not a valid timestamp"},
		{name: "started_at zero", mutate: func(c *longhaulv1.ScanCompletion) { c.StartedAt = &timestamppb.Timestamp{} },
			field: "started_at", reason: "zero timestamp"},
		{name: "started_at very old", mutate: func(c *longhaulv1.ScanCompletion) { c.StartedAt = ts(-400 * 24 * time.Hour) },
			field: "started_at", reason: "older than"},
		{name: "finished_at far future", mutate: func(c *longhaulv1.ScanCompletion) { c.FinishedAt = ts(time.Hour) },
			field: "finished_at", reason: "ahead of the edge's clock"},
		{name: "finished_at invalid", mutate: func(c *longhaulv1.ScanCompletion) {
			c.FinishedAt = &timestamppb.Timestamp{Seconds: valNow.Unix(), Nanos: 1e9}
		},
			field: "finished_at", reason: "is not a valid timestamp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := valCompletion()
			if tc.mutate != nil {
				tc.mutate(c)
			}
			before := proto.CloneOf(c)
			got, err := edge.ValidateCompletion(valNow, edge.Limits{}, c)
			if !proto.Equal(before, c) {
				t.Errorf("ValidateCompletion changed its input")
			}
			if tc.field != "" {
				if got != nil {
					t.Errorf("got %v with an error", got)
				}
				valCheckFieldError(t, err, -1, "completion."+tc.field, tc.reason)
				return
			}
			if err != nil {
				t.Fatalf("ValidateCompletion: %v", err)
			}
			want := proto.CloneOf(c)
			if tc.want != nil {
				tc.want(want)
			}
			if !proto.Equal(got, want) {
				t.Errorf("ValidateCompletion =\n %v\nwant\n %v", got, want)
			}
			if got == c {
				t.Errorf("ValidateCompletion returned its input, not a clone")
			}
		})
	}
	_, err := edge.ValidateCompletion(valNow, edge.Limits{}, nil)
	valCheckFieldError(t, err, -1, "completion", "is required")
}

func BenchmarkValidateInsights(b *testing.B) {
	ins := make([]*longhaulv1.Insight, 1000)
	for i := range ins {
		ins[i] = valInsight()
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := edge.ValidateInsights(valNow, edge.Limits{}, ins); err != nil {
			b.Fatal(err)
		}
	}
}
