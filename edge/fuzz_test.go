package edge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// fuzzEdge starts an edge whose primary is unreachable (shipping just
// retries), for fuzzing its entry points end to end.
func fuzzEdge(f *testing.F) *Service {
	f.Helper()
	svc, err := Start(context.Background(), Config{Region: "fuzz", NodeID: "n", DataDir: f.TempDir(), Primary: "127.0.0.1:1",
		Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", MaxRequestBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler),
		Shipper: ShipperConfig{BackoffMin: time.Second, BackoffMax: time.Second}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = svc.Stop(context.Background()) })
	return svc
}

func fuzzSeeds(f *testing.F) {
	ts := time.Now().UTC().Format(time.RFC3339Nano)
	good := fmt.Sprintf(`{"account_id":"a","asset":"b","kind":"k","subject":"s","severity":"HIGH","details":{"x":[1,"y",null,{"z":true}]},"observed_at":%q,"scan_id":"x","checker":"c"}`, ts)
	text := strings.Replace(good, `"details":{"x":[1,"y",null,{"z":true}]}`, `"details_json":"{\"x\": [1, \"y\", null, {\"z\": true}]}"`, 1)
	for _, s := range []string{`{"insights":[` + good + `]}`, `{"insights":[]}`, `{}`, `{"insights":[` + good + `,` + good + `]}`, `{"insights":[` + text + `]}`,
		`{"insights":[{"subject":"a\u0000"}]}`, "{\"insights\":[{\"asset\":\"\xff\"}]}", `[`, `null`, `{"insights":null}`} {
		f.Add([]byte(s))
	}
}

// FuzzHTTPPush: whatever body arrives at POST /v1/insights:push, the edge
// answers 200 (and the WAL grew by the insights accepted), 400 or 413, and
// stays up.
func FuzzHTTPPush(f *testing.F) {
	fuzzSeeds(f)
	svc := fuzzEdge(f)
	url := "http://" + svc.HTTPAddr() + "/v1/insights:push"
	f.Fuzz(func(t *testing.T, body []byte) {
		before := svc.WAL().Stats().AppendedRecords
		resp, err := http.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		grew := svc.WAL().Stats().AppendedRecords - before
		switch resp.StatusCode {
		case http.StatusOK:
			if grew == 0 {
				t.Fatalf("200 without writing: %s", out)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			if grew != 0 {
				t.Fatalf("%d, yet %d records written", resp.StatusCode, grew)
			}
		default:
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
	})
}

// FuzzGRPCPush: whatever bytes arrive as a Push request, the edge answers
// OK (having written), InvalidArgument, or (bytes that are not protobuf)
// the gRPC library's refusal, writes nothing when it refuses, and stays up.
func FuzzGRPCPush(f *testing.F) {
	fuzzSeeds(f)
	for _, n := range []int{1, 3} {
		req := &longhaulv1.PushRequest{}
		for range n {
			req.Insights = append(req.Insights, insight("scan", "k", "s", time.Now()))
		}
		b, _ := proto.Marshal(req)
		f.Add(b)
	}
	svc := fuzzEdge(f)
	cc, err := grpc.NewClient(svc.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { cc.Close() })
	f.Fuzz(func(t *testing.T, raw []byte) {
		before := svc.WAL().Stats().AppendedRecords
		var out longhaulv1.PushResponse
		err := cc.Invoke(context.Background(), "/longhaul.v1.Ingest/Push", rawMessage(raw), &out, grpc.ForceCodecV2(protoOut{}))
		grew := svc.WAL().Stats().AppendedRecords - before
		switch status.Code(err) {
		case codes.OK:
			if grew == 0 || int64(grew) != out.Accepted {
				t.Fatalf("OK, accepted %d, %d records written", out.Accepted, grew)
			}
		case codes.InvalidArgument, codes.Internal:
			if grew != 0 {
				t.Fatalf("%v, yet %d records written", err, grew)
			}
		default:
			t.Fatalf("unexpected answer: %v", err)
		}
	})
}

// protoOut sends raw bytes and decodes the answer as protobuf.
type protoOut struct{ rawCodec }

func (protoOut) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}
