package wire

import (
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

func genInsight(t *rapid.T) *longhaulv1.BatchInsight {
	str := func(label string) string {
		return rapid.SampledFrom([]string{"", "a", "host.example", "ü", "scan-1"}).Draw(t, label)
	}
	return &longhaulv1.BatchInsight{
		AccountId: str("account"), Asset: str("asset"), Kind: str("kind"), Subject: str("subject"),
		Severity:             longhaulv1.Severity(rapid.Int32Range(-2, 6).Draw(t, "severity")),
		Details:              []byte(rapid.SampledFrom([]string{"", "{}", `{"a":[1,2]}`}).Draw(t, "details")),
		ObservedAtUnixMicros: rapid.Int64().Draw(t, "observed"),
		ScanId:               str("scan"), Checker: str("checker"),
		FirstSeenUnixMicros: rapid.Int64Range(-1, 1).Draw(t, "first"),
	}
}

func genBatch(t *rapid.T) *longhaulv1.Batch {
	b := &longhaulv1.Batch{
		EdgeId: rapid.SampledFrom([]string{"", "eu/n1"}).Draw(t, "edge"), FirstSeq: rapid.Uint64().Draw(t, "first"),
		LastSeq: rapid.Uint64().Draw(t, "last"), OldestUnixMicros: rapid.Int64().Draw(t, "oldest"),
		Insights: rapid.SliceOfN(rapid.Custom(genInsight), 0, 20).Draw(t, "insights"),
	}
	for range rapid.IntRange(0, 2).Draw(t, "completions") {
		b.Completions = append(b.Completions, &longhaulv1.ScanCompletion{ScanId: "s", InsightCount: rapid.Int64().Draw(t, "count")})
	}
	for range rapid.IntRange(0, 2).Draw(t, "tallies") {
		b.Tallies = append(b.Tallies, &longhaulv1.ScanTally{ScanId: "s", Count: rapid.Int64().Draw(t, "tally")})
	}
	return b
}

// TestDecodeShipRequestReadsWhatProtoWrites: a batch proto encodes is
// read by DecodeShipRequest, not left to the fallback, as proto reads it.
func TestDecodeShipRequestReadsWhatProtoWrites(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		want := &longhaulv1.ShipRequest{Kind: &longhaulv1.ShipRequest_Batch{Batch: genBatch(t)}}
		b, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var got longhaulv1.ShipRequest
		if !DecodeShipRequest(b, &got) {
			t.Fatalf("DecodeShipRequest refused what proto wrote: %x", b)
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("read %v, want %v", &got, want)
		}
		for i := range b {
			b[i] = 0xff // the caller's buffer may be reused: nothing read may share it
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("after its buffer was overwritten, the request reads %v", &got)
		}
	})
}

// TestCodec: the codec sends an Encoded as it is, and reads a hello, which
// DecodeShipRequest leaves to proto, and a batch with a field it does not
// know, as proto does.
func TestCodec(t *testing.T) {
	var c Codec
	hello := &longhaulv1.ShipRequest{Kind: &longhaulv1.ShipRequest_Hello{Hello: &longhaulv1.Hello{EdgeId: "eu/n1", Region: "eu"}}}
	batch := &longhaulv1.ShipRequest{Kind: &longhaulv1.ShipRequest_Batch{Batch: &longhaulv1.Batch{EdgeId: "eu/n1", FirstSeq: 1, LastSeq: 1,
		Insights: []*longhaulv1.BatchInsight{{AccountId: "a", Asset: "x", Kind: "k", Subject: "s", ObservedAtUnixMicros: 1}}}}}
	unknown, _ := proto.Marshal(batch.GetBatch())
	unknown = protowire.AppendVarint(protowire.AppendTag(unknown, 99, protowire.VarintType), 1)
	unknown = protowire.AppendBytes(protowire.AppendTag(nil, FieldShipRequestBatch, protowire.BytesType), unknown)
	for name, m := range map[string]any{"hello": hello, "batch": batch, "encoded batch": Encoded(unknown)} {
		data, err := c.Marshal(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := &longhaulv1.ShipRequest{}
		if err := proto.Unmarshal(data.Materialize(), want); err != nil {
			t.Fatalf("%s: proto cannot read what the codec wrote: %v", name, err)
		}
		if e, ok := m.(Encoded); ok && string(data.Materialize()) != string(e) {
			t.Fatalf("%s: the codec did not send the bytes as they are", name)
		}
		got := &longhaulv1.ShipRequest{}
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data.Materialize())}, got); err != nil || !proto.Equal(got, want) {
			t.Fatalf("%s: the codec read %v, %v; want %v", name, got, err, want)
		}
	}
}

// FuzzDecodeShipRequest: whatever DecodeShipRequest accepts, proto reads
// as the same request.
func FuzzDecodeShipRequest(f *testing.F) {
	for _, b := range []*longhaulv1.Batch{
		{EdgeId: "eu/n1", FirstSeq: 1, LastSeq: 2, OldestUnixMicros: 5,
			Insights: []*longhaulv1.BatchInsight{{AccountId: "a", Asset: "x", Kind: "k", Subject: "s", Severity: 3, Details: []byte(`{}`),
				ObservedAtUnixMicros: 7, ScanId: "s", Checker: "c", FirstSeenUnixMicros: 6}, {}},
			Completions: []*longhaulv1.ScanCompletion{{ScanId: "s", InsightCount: 2}}, Tallies: []*longhaulv1.ScanTally{{ScanId: "s", Count: 2}}},
		{},
	} {
		p, err := proto.Marshal(&longhaulv1.ShipRequest{Kind: &longhaulv1.ShipRequest_Batch{Batch: b}})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add([]byte("\x12\x02\x0a\x00"))
	f.Add([]byte("\x12\x03\x22\x01\xff"))
	f.Add([]byte("\x12\x04\x22\x02\x12\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got longhaulv1.ShipRequest
		if !DecodeShipRequest(b, &got) {
			if got.Kind != nil {
				t.Fatalf("DecodeShipRequest refused %x but filled the request", b)
			}
			return
		}
		var want longhaulv1.ShipRequest
		if err := proto.Unmarshal(b, &want); err != nil {
			t.Fatalf("DecodeShipRequest accepted %x, which proto refuses: %v", b, err)
		}
		if !proto.Equal(&got, &want) {
			t.Fatalf("DecodeShipRequest read %v, proto %v", &got, &want)
		}
	})
}
