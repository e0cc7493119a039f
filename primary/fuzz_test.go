package primary

import (
	"io"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/wire"
)

// FuzzShipBatch feeds arbitrary bytes through what the primary does with a
// shipping message before PostgreSQL sees it: decode (with its server's
// codec, internal/wire, falling back to proto), collapse, sort, and
// build the columns and COPY rows. Nothing may panic, and every row the
// collapse keeps is one of the batch's keys, once.
func FuzzShipBatch(f *testing.F) {
	seed := &longhaulv1.ShipRequest{Kind: &longhaulv1.ShipRequest_Batch{Batch: &longhaulv1.Batch{
		EdgeId: "eu/n1", FirstSeq: 1, LastSeq: 2,
		Insights: []*longhaulv1.BatchInsight{
			{AccountId: "a", Asset: "h", Kind: "tls.expiry", Subject: "443", Severity: longhaulv1.Severity_HIGH,
				Details: []byte(`{"d":1}`), ObservedAtUnixMicros: 10, ScanId: "s", Checker: "tls"},
			{AccountId: "a", Asset: "h", Kind: "tls.expiry", Subject: "443", Severity: longhaulv1.Severity_LOW,
				Details: []byte(`{}`), ObservedAtUnixMicros: 20, ScanId: "s", Checker: "tls"},
		},
		Tallies: []*longhaulv1.ScanTally{{ScanId: "s", Count: 1, MinObservedAtUnixMicros: 10}},
	}}}
	b, _ := proto.Marshal(seed)
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{0x12, 0x03, 0x0a, 0x01, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req longhaulv1.ShipRequest
		if (wire.Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, &req) != nil {
			return
		}
		batch := req.GetBatch()
		if batch == nil {
			return
		}
		p := prepare(batch.GetInsights(), batch.GetTallies())
		seen := map[[4]string]bool{}
		for _, r := range p.rows {
			k := [4]string{r.In.AccountId, r.In.Asset, r.In.Kind, r.In.Subject}
			if seen[k] {
				t.Fatalf("key %v twice after the collapse", k)
			}
			seen[k] = true
		}
		if len(p.rows)+p.dropped != len(batch.GetInsights()) {
			t.Fatalf("%d rows + %d dropped != %d insights", len(p.rows), p.dropped, len(batch.GetInsights()))
		}
		toColumns(p.rows)
		if _, err := io.Copy(io.Discard, &copyReader{rows: p.rows}); err != nil {
			t.Fatal(err)
		}
	})
}
