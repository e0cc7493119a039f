package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/coalesce"
)

// TestDetailsJSONEndToEnd: details_json pushed over gRPC (unary and stream)
// and HTTP/JSON lands in PostgreSQL as the jsonb its text says, with the
// hash of the compact text; bad details_json is refused over both, naming
// the field, and nothing of it is written.
func TestDetailsJSONEndToEnd(t *testing.T) {
	t.Parallel()
	s := startSystem(t, Config{})
	ctx := context.Background()
	now := time.Now().Add(-time.Minute)
	withText := func(subject, text string) *longhaulv1.Insight {
		in := insight("scan-dj", "dj", subject, now)
		in.Details, in.DetailsJson = nil, text
		return in
	}
	texts := map[string]string{ // subject: details_json
		"grpc": " {\"days_left\": 3, \"issuer\": \"R3 \\u003c\\u00e9\\ud83d\\ude00> \\\"x\\\"\",\n\t\"chain\": [\"a\", {\"b\": null}],\n" +
			"  \"n\": 1.50e2, \"big\": 123456789012345678901234567890, \"zero\": -0} ",
		"stream": `{"z":{"y":{"x":[[[]]]}},"a":"☃","":"\u2028"}`,
		"http":   `{ "cipher" : "RC4", "bits" : [40, 56], "note": "tab\tand \\ backslash" }`,
	}

	if _, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{withText("grpc", texts["grpc"])}}); err != nil {
		t.Fatal(err)
	}
	stream, err := s.ingest.PushStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{withText("stream", texts["stream"])}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	httpBody := func(subject, detailsJSON string) string {
		q, err := json.Marshal(detailsJSON) // a JSON string holding the text
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf(`{"insights":[{"account_id":"acme","asset":"www.example.com","kind":"dj","subject":%q,"severity":"LOW",`+
			`"details_json":%s,"observed_at":%q,"scan_id":"scan-dj","checker":"tls"}]}`, subject, q, now.Format(time.RFC3339Nano))
	}
	if code, body, _ := postJSON(t, s.http+"/v1/insights:push", httpBody("http", texts["http"])); code != http.StatusOK {
		t.Fatalf("HTTP push: %d %s", code, body)
	}

	eventually(t, "details_json rows applied", func() (bool, string) {
		n := s.count(t, `SELECT count(*) FROM insights WHERE kind = 'dj'`)
		return n == len(texts), fmt.Sprint(n, " rows")
	})
	for subject, text := range texts {
		var compact bytes.Buffer
		if err := json.Compact(&compact, []byte(text)); err != nil {
			t.Fatal(err)
		}
		var same bool
		var hash int64
		if err := s.db.QueryRow(ctx, `SELECT details = $2::text::jsonb, details_hash FROM insights WHERE kind = 'dj' AND subject = $1`,
			subject, text).Scan(&same, &hash); err != nil {
			t.Fatal(err)
		}
		if !same {
			t.Errorf("%s: the stored jsonb is not %s", subject, text)
		}
		if want := coalesce.DetailsHash(compact.Bytes()); hash != want {
			t.Errorf("%s: details_hash %d, want %d, the hash of %s", subject, hash, want, compact.Bytes())
		}
	}
	// Numbers keep every digit, and escapes decode as jsonb decodes them.
	var big, issuer string
	if err := s.db.QueryRow(ctx, `SELECT details->>'big', details->>'issuer' FROM insights WHERE kind = 'dj' AND subject = 'grpc'`).Scan(&big, &issuer); err != nil {
		t.Fatal(err)
	}
	if big != "123456789012345678901234567890" || issuer != `R3 <é😀> "x"` {
		t.Errorf("big %s, issuer %q", big, issuer)
	}

	// Refused, over gRPC and HTTP, with nothing written.
	before := s.edge.WAL().Stats().AppendedRecords
	for _, bad := range []struct {
		name, text string
		details    *structpb.Struct
		reason     string
	}{
		{"not JSON", `{"a":}`, nil, "is not valid JSON"},
		{"not an object", `[1]`, nil, "must be one JSON object, got an array"},
		{"duplicate key", `{"a":1,"b":{"c":1,"c":2}}`, nil, `object at "/b" has the key "c" twice`},
		{"lone surrogate", `{"a":"\ud800"}`, nil, `lone UTF-16 surrogate \ud800`},
		{"escaped NUL", `{"a":["\u0000"]}`, nil, `string at "/a/0" must not contain \u0000`},
		{"too deep", strings.Repeat(`{"a":`, 33) + `1` + strings.Repeat(`}`, 33), nil, "must not nest deeper than 32 levels"},
		{"beyond numeric", `{"n":1e200000}`, nil, "beyond the range of PostgreSQL's numeric"},
		{"both set", `{"a":1}`, &structpb.Struct{}, "must not be set together with details"},
	} {
		in := withText("bad", bad.text)
		in.Details = bad.details
		_, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{withText("ok", `{}`), in}})
		st := status.Convert(err)
		var violation *errdetails.BadRequest_FieldViolation
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 {
				violation = br.GetFieldViolations()[0]
			}
		}
		if st.Code() != codes.InvalidArgument || violation == nil || violation.GetField() != "insights[1].details_json" ||
			!strings.Contains(violation.GetDescription(), bad.reason) {
			t.Errorf("gRPC %s: %v (%v); want InvalidArgument naming insights[1].details_json: %s", bad.name, err, violation, bad.reason)
		}

		body := httpBody("bad", bad.text)
		if bad.details != nil {
			body = strings.Replace(body, `"details_json":`, `"details":{},"details_json":`, 1)
		}
		code, answer, _ := postJSON(t, s.http+"/v1/insights:push", body)
		var decoded struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal([]byte(answer), &decoded)
		if code != http.StatusBadRequest || !strings.HasPrefix(decoded.Message, "insights[0].details_json: ") ||
			!strings.Contains(decoded.Message, bad.reason) {
			t.Errorf("HTTP %s: %d %s; want 400 naming insights[0].details_json: %s", bad.name, code, answer, bad.reason)
		}
	}
	if grew := s.edge.WAL().Stats().AppendedRecords - before; grew != 0 {
		t.Errorf("refused pushes wrote %d records", grew)
	}
	if n := s.count(t, `SELECT count(*) FROM insights WHERE subject IN ('ok', 'bad')`); n != 0 {
		t.Errorf("%d rows of refused pushes", n)
	}
}
