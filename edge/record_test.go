package edge_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/edge"
)

func recBatchInsight() *longhaulv1.BatchInsight {
	return &longhaulv1.BatchInsight{
		AccountId:            "acct-42",
		Asset:                "shop.example.com",
		Kind:                 "tls.expiry",
		Subject:              "443/tcp",
		Severity:             longhaulv1.Severity_CRITICAL,
		Details:              []byte(`{"days_left":3}`),
		ObservedAtUnixMicros: valNow.UnixMicro(),
		ScanId:               "scan-7",
		Checker:              "tls",
	}
}

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	in := recBatchInsight()
	payload, err := edge.EncodeInsight(in)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := edge.DecodeRecord(payload)
	if err != nil {
		t.Fatalf("DecodeRecord: %v", err)
	}
	if rec.GetCompletion() != nil || !proto.Equal(rec.GetInsight(), in) {
		t.Errorf("insight round trip: got %v, want %v", rec, in)
	}

	c := valCompletion()
	payload, err = edge.EncodeCompletion(c)
	if err != nil {
		t.Fatal(err)
	}
	rec, err = edge.DecodeRecord(payload)
	if err != nil {
		t.Fatalf("DecodeRecord: %v", err)
	}
	if rec.GetInsight() != nil || !proto.Equal(rec.GetCompletion(), c) {
		t.Errorf("completion round trip: got %v, want %v", rec, c)
	}

	// What ValidateInsights returns goes into the WAL as it is.
	out, err := edge.ValidateInsights(valNow, edge.Limits{}, []*longhaulv1.Insight{valInsight()})
	if err != nil {
		t.Fatal(err)
	}
	payload, err = edge.EncodeInsight(out[0])
	if err != nil {
		t.Fatal(err)
	}
	if rec, err = edge.DecodeRecord(payload); err != nil || !proto.Equal(rec.GetInsight(), out[0]) {
		t.Errorf("validated insight round trip: %v, %v", rec, err)
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	t.Parallel()
	good, err := edge.EncodeInsight(recBatchInsight())
	if err != nil {
		t.Fatal(err)
	}
	empty, err := proto.Marshal(&longhaulv1.WalRecord{})
	if err != nil {
		t.Fatal(err)
	}
	// An insight whose subject is not UTF-8: protobuf refuses it.
	var badUTF8 []byte
	{
		var inner []byte
		inner = protowire.AppendTag(inner, 4, protowire.BytesType)
		inner = protowire.AppendString(inner, "\xff")
		badUTF8 = protowire.AppendTag(badUTF8, 1, protowire.BytesType)
		badUTF8 = protowire.AppendBytes(badUTF8, inner)
	}
	// Only a field this version does not know.
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1)
	for name, payload := range map[string][]byte{
		"nil":            nil,
		"empty":          {},
		"empty record":   empty,
		"garbage":        []byte("this is not protobuf"),
		"0xff":           {0xff},
		"truncated":      good[:len(good)-1],
		"invalid UTF-8":  badUTF8,
		"unknown only":   unknown,
		"bad wire type":  {0x0f},
		"huge length":    {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"trailing bytes": append(append([]byte{}, good...), 0x0a),
	} {
		rec, err := edge.DecodeRecord(payload)
		if !errors.Is(err, edge.ErrBadRecord) {
			t.Errorf("%s: DecodeRecord = %v, %v; want ErrBadRecord", name, rec, err)
		}
		if rec != nil {
			t.Errorf("%s: DecodeRecord returned a record with an error", name)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, in := range []*longhaulv1.BatchInsight{recBatchInsight(), {}, {Details: []byte(`{}`), ObservedAtUnixMicros: -1}} {
		p, err := edge.EncodeInsight(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	for _, c := range []*longhaulv1.ScanCompletion{valCompletion(), {}, {InsightCount: -1}} {
		p, err := edge.EncodeCompletion(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff})
	f.Add([]byte("\x0a\x00\x12\x00"))
	f.Fuzz(func(t *testing.T, payload []byte) {
		rec, err := edge.DecodeRecord(payload)
		if err != nil {
			if !errors.Is(err, edge.ErrBadRecord) || rec != nil {
				t.Fatalf("DecodeRecord = %v, %v", rec, err)
			}
			return
		}
		var again []byte
		switch {
		case rec.GetInsight() != nil:
			again, err = edge.EncodeInsight(rec.GetInsight())
		case rec.GetCompletion() != nil:
			again, err = edge.EncodeCompletion(rec.GetCompletion())
		default:
			t.Fatalf("DecodeRecord accepted a record of neither kind: %v", rec)
		}
		if err != nil {
			t.Fatalf("re-encoding %v: %v", rec, err)
		}
		rec2, err := edge.DecodeRecord(again)
		if err != nil {
			t.Fatalf("decoding the re-encoding of %v: %v", rec, err)
		}
		if !proto.Equal(rec.GetInsight(), rec2.GetInsight()) || !proto.Equal(rec.GetCompletion(), rec2.GetCompletion()) {
			t.Fatalf("round trip changed the record:\n%v\n%v", rec, rec2)
		}
	})
}

// recPushSeeds are requests for the fuzz targets of the two entry points:
// good ones and ones that break each rule.
func recPushSeeds() []*longhaulv1.PushRequest {
	mut := func(f func(*longhaulv1.Insight)) *longhaulv1.PushRequest {
		in := valInsight()
		f(in)
		return &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{valInsight(), in}}
	}
	return []*longhaulv1.PushRequest{
		{Insights: []*longhaulv1.Insight{valInsight()}},
		{},
		mut(func(in *longhaulv1.Insight) { in.Details = nil }),
		mut(func(in *longhaulv1.Insight) { in.Details = valNested(32, true) }),
		mut(func(in *longhaulv1.Insight) { in.Details = valNested(33, false) }),
		mut(func(in *longhaulv1.Insight) { in.Subject = "a\x00b" }),
		mut(func(in *longhaulv1.Insight) { in.Kind = "a\x1bb" }),
		mut(func(in *longhaulv1.Insight) { in.Asset = "" }),
		mut(func(in *longhaulv1.Insight) { in.Severity = 9 }),
		mut(func(in *longhaulv1.Insight) { in.Details = valStruct(map[string]any{"k\x00": "v"}) }),
		mut(func(in *longhaulv1.Insight) { in.Details = valStruct(map[string]any{"k": []any{"v\x00"}}) }),
		mut(func(in *longhaulv1.Insight) { in.Details = valStruct(map[string]any{"n": math.NaN()}) }),
		mut(func(in *longhaulv1.Insight) { in.Details = valStruct(map[string]any{"s": strings.Repeat("x", 17000)}) }),
		mut(func(in *longhaulv1.Insight) { in.ObservedAt = nil }),
		mut(func(in *longhaulv1.Insight) { in.ObservedAt = &timestamppb.Timestamp{} }),
		mut(func(in *longhaulv1.Insight) { in.ObservedAt = timestamppb.New(valNow.Add(time.Hour)) }),
		mut(func(in *longhaulv1.Insight) {
			in.ObservedAt = &timestamppb.Timestamp{Seconds: valNow.Unix(), Nanos: 1e9}
		}),
		mut(func(in *longhaulv1.Insight) {
			in.Details = &structpb.Struct{Fields: map[string]*structpb.Value{"a": {}, "b": structpb.NewStructValue(nil)}}
		}),
		mut(func(in *longhaulv1.Insight) { in.Details, in.DetailsJson = nil, ` {"a": [1, "\u00e9", {"b": null}]} ` }),
		mut(func(in *longhaulv1.Insight) { in.Details, in.DetailsJson = nil, `{"a":1,"a":2}` }),
		mut(func(in *longhaulv1.Insight) { in.Details, in.DetailsJson = nil, `{"a":"\ud800\u0000"}` }),
		mut(func(in *longhaulv1.Insight) { in.DetailsJson = `{}` }),
	}
}

func FuzzValidateInsights(f *testing.F) {
	for _, req := range recPushSeeds() {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("\x0a\x02\x22\xff")) // subject "\xff": proto.Unmarshal refuses it
	f.Fuzz(func(t *testing.T, wire []byte) {
		var req longhaulv1.PushRequest
		if err := proto.Unmarshal(wire, &req); err != nil {
			t.Skipf("not a PushRequest: %v", err)
		}
		recCheckValidate(t, req.GetInsights())
	})
}

func FuzzValidateJSON(f *testing.F) {
	for _, req := range recPushSeeds() {
		b, err := protojson.Marshal(req)
		if err != nil {
			continue // NaN and values without a kind have no JSON form
		}
		f.Add(b)
	}
	obs := `"observedAt":"` + valNow.Add(-time.Minute).Format(time.RFC3339Nano) + `"`
	for _, s := range []string{
		`{"insights":[{"accountId":"a","asset":"b","kind":"c","subject":"d","severity":"LOW","scanId":"s","checker":"x",` + obs + `}]}`,
		`{"insights":[{"account_id":"a","asset":"b","kind":"c","subject":"d\u0000","severity":2,"scan_id":"s","checker":"x",` + obs + `}]}`,
		`{"insights":[{"accountId":"a","asset":"b","kind":"c","subject":"d","severity":9,"scanId":"s","checker":"x",` + obs + `}]}`,
		`{"insights":[{"accountId":"a","asset":"b","kind":"c","subject":"d","severity":"HIGH","scanId":"s","checker":"x",` + obs +
			`,"details":{"k":[1,2.5e300,"\u0000",{"\u0000":null}],"t":true}}]}`,
		// Details 32 and 33 levels deep.
		`{"insights":[{"accountId":"a","asset":"b","kind":"c","subject":"d","severity":"HIGH","scanId":"s","checker":"x",` + obs +
			`,"details":` + strings.Repeat(`{"a":`, 20) + strings.Repeat("[", 12) + strings.Repeat("]", 12) + strings.Repeat("}", 20) + `}]}`,
		`{"insights":[{"accountId":"a","asset":"b","kind":"c","subject":"d","severity":"HIGH","scanId":"s","checker":"x",` + obs +
			`,"details":` + strings.Repeat(`{"a":`, 20) + strings.Repeat("[", 13) + strings.Repeat("]", 13) + strings.Repeat("}", 20) + `}]}`,
		`{"insights":[{"accountId":"a","asset":"b","kind":"c","subject":"d","severity":"HIGH","scanId":"s","checker":"x","observedAt":"1970-01-01T00:00:00Z"}]}`,
		`{"insights":[]}`,
		`{"insights":[{}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req longhaulv1.PushRequest
		if err := (protojson.UnmarshalOptions{}).Unmarshal(body, &req); err != nil {
			t.Skipf("not a PushRequest: %v", err)
		}
		recCheckValidate(t, req.GetInsights())
	})
}

// recCheckValidate runs ValidateInsights and checks every promise it makes,
// without trusting its helpers: on success, output the primary accepts and
// that matches the input; on failure, a FieldError that names the field.
func recCheckValidate(t *testing.T, ins []*longhaulv1.Insight) {
	t.Helper()
	out, err := edge.ValidateInsights(valNow, edge.Limits{}, ins)
	if err != nil {
		if out != nil {
			t.Fatalf("ValidateInsights returned insights and %v", err)
		}
		var fe *edge.FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("error %v (%T) is not a *edge.FieldError", err, err)
		}
		if fe.Index >= len(ins) || fe.Index < -1 || fe.Reason == "" {
			t.Fatalf("bad FieldError %+v for %d insights", fe, len(ins))
		}
		prefix := "insights"
		if fe.Index >= 0 {
			prefix = "insights[" + strconv.Itoa(fe.Index) + "]"
		}
		if !strings.HasPrefix(fe.Field, prefix) {
			t.Fatalf("field %q does not start with %q", fe.Field, prefix)
		}
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !utf8.ValidString(st.Message()) {
			t.Fatalf("status %v", st)
		}
		if _, err := proto.Marshal(st.Proto()); err != nil {
			t.Fatalf("status does not marshal: %v", err)
		}
		return
	}
	if len(ins) == 0 || len(ins) > edge.DefaultMaxInsightsPerRequest || len(out) != len(ins) {
		t.Fatalf("%d insights in, %d out", len(ins), len(out))
	}
	for i, b := range out {
		in := ins[i]
		for _, f := range []struct {
			name     string
			in, got  string
			maxBytes int
		}{
			{"account_id", in.GetAccountId(), b.GetAccountId(), edge.MaxAccountIDBytes},
			{"asset", in.GetAsset(), b.GetAsset(), edge.MaxAssetBytes},
			{"kind", in.GetKind(), b.GetKind(), edge.MaxKindBytes},
			{"subject", in.GetSubject(), b.GetSubject(), edge.MaxSubjectBytes},
			{"scan_id", in.GetScanId(), b.GetScanId(), edge.MaxScanIDBytes},
			{"checker", in.GetChecker(), b.GetChecker(), edge.MaxCheckerBytes},
		} {
			if f.got != f.in {
				t.Fatalf("insights[%d].%s changed: %q -> %q", i, f.name, f.in, f.got)
			}
			if f.got == "" || len(f.got) > f.maxBytes || !utf8.ValidString(f.got) {
				t.Fatalf("insights[%d].%s accepted: %q", i, f.name, f.got)
			}
			for _, c := range []byte(f.got) {
				if c < 0x20 || c == 0x7f {
					t.Fatalf("insights[%d].%s accepted with control byte %#x: %q", i, f.name, c, f.got)
				}
			}
		}
		if s := b.GetSeverity(); s != in.GetSeverity() || s < longhaulv1.Severity_LOW || s > longhaulv1.Severity_CRITICAL {
			t.Fatalf("insights[%d].severity accepted: %v", i, s)
		}
		obs := in.GetObservedAt()
		if !obs.IsValid() {
			t.Fatalf("insights[%d].observed_at accepted: %v", i, obs)
		}
		if got, want := b.GetObservedAtUnixMicros(), obs.AsTime().UnixMicro(); got != want {
			t.Fatalf("insights[%d].observed_at_unix_micros = %d, want %d", i, got, want)
		}
		if got := b.GetObservedAtUnixMicros(); got < valNow.Add(-edge.DefaultMaxAge).UnixMicro() || got > valNow.Add(edge.DefaultMaxClockSkew).UnixMicro() {
			t.Fatalf("insights[%d].observed_at accepted: %v", i, obs.AsTime())
		}
		valCheckInsightDetails(t, in, b.GetDetails())
		if _, err := edge.EncodeInsight(b); err != nil {
			t.Fatalf("insights[%d] does not encode for the WAL: %v", i, err)
		}
	}
	again, err := edge.ValidateInsights(valNow, edge.Limits{}, ins)
	if err != nil || len(again) != len(out) {
		t.Fatalf("second validation: %v", err)
	}
	for i := range out {
		if !proto.Equal(again[i], out[i]) {
			t.Fatalf("insights[%d]: validation is not deterministic:\n%v\n%v", i, out[i], again[i])
		}
	}
}

// valCheckDetailsMatch checks that stored details are what PostgreSQL's
// jsonb accepts and hold the same JSON as the Struct they came from.
func valCheckDetailsMatch(t *testing.T, in *structpb.Struct, stored []byte) {
	t.Helper()
	if len(stored) > edge.DefaultMaxDetailsBytes || !utf8.Valid(stored) || bytes.IndexByte(stored, 0) >= 0 {
		t.Fatalf("details accepted: %q", stored)
	}
	var got any
	dec := json.NewDecoder(bytes.NewReader(stored))
	if err := dec.Decode(&got); err != nil || dec.More() {
		t.Fatalf("details are not one JSON value (%v): %q", err, stored)
	}
	obj, ok := got.(map[string]any)
	if !ok {
		t.Fatalf("details are not a JSON object: %q", stored)
	}
	if d := recJSONDepth(obj); d > edge.MaxDetailsDepth {
		t.Fatalf("details nest %d levels: %q", d, stored)
	}
	if recJSONHasNUL(obj) {
		t.Fatalf("details hold \\u0000: %q", stored)
	}
	want := map[string]any{}
	if in != nil {
		want = in.AsMap()
	}
	if !reflect.DeepEqual(obj, want) {
		t.Fatalf("details changed:\nstored %s\nwant   %v", stored, want)
	}
}

func recJSONDepth(v any) int {
	d := 0
	switch v := v.(type) {
	case map[string]any:
		for _, e := range v {
			d = max(d, recJSONDepth(e))
		}
		return d + 1
	case []any:
		for _, e := range v {
			d = max(d, recJSONDepth(e))
		}
		return d + 1
	}
	return 0
}

func recJSONHasNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.IndexByte(v, 0) >= 0
	case map[string]any:
		for k, e := range v {
			if strings.IndexByte(k, 0) >= 0 || recJSONHasNUL(e) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if recJSONHasNUL(e) {
				return true
			}
		}
	}
	return false
}
