package edge

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/coalesce"
	"github.com/longhaul/longhaul/wal"
)

// protoBatch is the batch of recs as the shipper built it with proto
// before it copied records' bytes: every record decoded, the insights
// collapsed, the Batch marshalled.
func protoBatch(edgeID string, recs []wal.Record) (*longhaulv1.Batch, []uint64) {
	b := &longhaulv1.Batch{EdgeId: edgeID, FirstSeq: recs[0].Seq, LastSeq: recs[len(recs)-1].Seq}
	oldest := recs[0].AppendedAt
	var ins []*longhaulv1.BatchInsight
	var bad []uint64
	for _, r := range recs {
		if r.AppendedAt.Before(oldest) {
			oldest = r.AppendedAt
		}
		rec, err := DecodeRecord(r.Payload)
		if err != nil {
			bad = append(bad, r.Seq)
			continue
		}
		if c := rec.GetCompletion(); c != nil {
			b.Completions = append(b.Completions, c)
			continue
		}
		ins = append(ins, rec.GetInsight())
	}
	b.OldestUnixMicros = oldest.UnixMicro()
	if len(ins) > 0 {
		c := coalesce.Collapse(ins)
		for _, w := range c.Winners {
			if w.FirstSeen < w.In.ObservedAtUnixMicros {
				w.In.FirstSeenUnixMicros = w.FirstSeen
			}
			b.Insights = append(b.Insights, w.In)
		}
		for _, t := range c.Tallies {
			b.Tallies = append(b.Tallies, &longhaulv1.ScanTally{ScanId: t.ScanID, Count: t.Count, MinObservedAtUnixMicros: t.MinObserved})
		}
	}
	return b, bad
}

// genRecord draws a WAL payload: mostly insights over a few keys (so that
// batches collapse), some completions, and some in shapes only proto
// reads (an unknown field, a field twice) or nobody does.
func genRecord(t *rapid.T) []byte {
	pick := func(label string, vals ...string) string { return rapid.SampledFrom(vals).Draw(t, label) }
	in := &longhaulv1.BatchInsight{
		AccountId: pick("account", "a", "b", ""), Asset: pick("asset", "x.example", "y.example"),
		Kind: pick("kind", "tls", "port"), Subject: pick("subject", "s1", "s2", "ü"),
		Severity:             longhaulv1.Severity(rapid.IntRange(-1, 5).Draw(t, "severity")),
		Details:              []byte(pick("details", `{}`, `{"a":1}`, "")),
		ObservedAtUnixMicros: rapid.Int64Range(-2, 5).Draw(t, "observed") * 1_000_000,
		ScanId:               pick("scan", "s-1", "s-2", ""), Checker: pick("checker", "c1", "c2"),
		FirstSeenUnixMicros: rapid.SampledFrom([]int64{0, 0, 0, -3_000_000, 3_000_000}).Draw(t, "first"),
	}
	p, err := EncodeInsight(in)
	if err != nil {
		t.Fatal(err)
	}
	switch rapid.IntRange(0, 9).Draw(t, "shape") {
	case 0:
		p, err = EncodeCompletion(&longhaulv1.ScanCompletion{ScanId: pick("completion", "s-1", "s-2"), InsightCount: 3})
		if err != nil {
			t.Fatal(err)
		}
	case 1: // an unknown field inside the insight
		raw, _ := proto.Marshal(in)
		raw = protowire.AppendTag(raw, 99, protowire.VarintType)
		raw = protowire.AppendVarint(raw, 7)
		p = protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), raw)
	case 2: // the subject twice: the last one counts
		raw, _ := proto.Marshal(in)
		raw = protowire.AppendTag(raw, 4, protowire.BytesType)
		raw = protowire.AppendString(raw, "s2")
		p = protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), raw)
	case 3: // garbage
		p = rapid.SliceOfN(rapid.Byte(), 0, 12).Draw(t, "garbage")
	case 4: // invalid UTF-8 in the asset
		raw, _ := proto.Marshal(in)
		raw = protowire.AppendTag(raw, 2, protowire.BytesType)
		raw = protowire.AppendString(raw, "\xff")
		p = protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), raw)
	}
	return p
}

// TestBuildMatchesProto: the batch the shipper encodes from the records'
// bytes decodes to the batch it built by decoding and encoding every
// record, and sets aside the same records.
func TestBuildMatchesProto(t *testing.T) {
	s := &Shipper{cfg: ShipperConfig{EdgeID: "eu/n1"}}
	rapid.Check(t, func(t *rapid.T) {
		payloads := rapid.SliceOfN(rapid.Custom(genRecord), 1, 40).Draw(t, "records")
		first := rapid.Uint64Range(1, 1<<40).Draw(t, "first")
		at := time.UnixMicro(1_800_000_000_000_000)
		recs := make([]wal.Record, len(payloads))
		for i, p := range payloads {
			recs[i] = wal.Record{Seq: first + uint64(i), Payload: p, AppendedAt: at.Add(time.Duration(rapid.IntRange(-3, 3).Draw(t, "appended")) * time.Second)}
		}
		want, wantBad := protoBatch(s.cfg.EdgeID, recs)

		b, f, err := s.build(recs)
		if err != nil {
			t.Fatal(err)
		}
		var req longhaulv1.ShipRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			t.Fatalf("the encoded batch does not decode: %v", err)
		}
		if !proto.Equal(req.GetBatch(), want) {
			t.Fatalf("encoded batch:\n%v\nwant (decoded and encoded with proto):\n%v", req.GetBatch(), want)
		}
		if !slices.Equal(f.bad, wantBad) || f.insightsOut != len(want.Insights) || f.completions != len(want.Completions) {
			t.Fatalf("flight: bad %v, %d insights out, %d completions; want %v, %d, %d",
				f.bad, f.insightsOut, f.completions, wantBad, len(want.Insights), len(want.Completions))
		}
	})
}

// FuzzDecodeInsight: whatever decodeInsight accepts, proto reads as the
// same insight, from the record and from the bytes the batch copies.
func FuzzDecodeInsight(f *testing.F) {
	for _, in := range []*longhaulv1.BatchInsight{
		{AccountId: "a", Asset: "x.example", Kind: "tls", Subject: "s", Severity: longhaulv1.Severity_HIGH,
			Details: []byte(`{"a":1}`), ObservedAtUnixMicros: 1_800_000_000_000_000, ScanId: "s-1", Checker: "c", FirstSeenUnixMicros: 5},
		{}, {ObservedAtUnixMicros: -1, Severity: -1},
	} {
		p, err := EncodeInsight(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add([]byte("\x0a\x02\x22\x00"))
	f.Add([]byte("\x0a\x03\x12\x01\xff"))
	f.Add([]byte("\x0a\x02\x38\x80"))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var in longhaulv1.BatchInsight
		raw, ok := decodeInsight(payload, &in)
		if !ok {
			return
		}
		rec, err := DecodeRecord(payload)
		if err != nil || rec.GetInsight() == nil {
			t.Fatalf("decodeInsight accepted %x, which proto reads as %v, %v", payload, rec, err)
		}
		if !proto.Equal(rec.GetInsight(), &in) {
			t.Fatalf("decodeInsight read %v, proto %v", &in, rec.GetInsight())
		}
		var again longhaulv1.BatchInsight
		if err := proto.Unmarshal(raw, &again); err != nil || !proto.Equal(&again, &in) {
			t.Fatalf("the bytes the batch copies read as %v, %v; want %v", &again, err, &in)
		}
	})
}

// BenchmarkBuild: the shipper's work per batch of 10,000 records over
// 10,000 keys, and as proto did it.
func BenchmarkBuild(b *testing.B) {
	recs := make([]wal.Record, 10000)
	for i := range recs {
		p, err := EncodeInsight(&longhaulv1.BatchInsight{AccountId: "acct-1", Asset: fmt.Sprintf("host-%d.example", i%500),
			Kind: "tls", Subject: fmt.Sprintf("finding-%d", i), Severity: longhaulv1.Severity_HIGH,
			Details:              []byte(`{"cipher":"TLS_RSA_WITH_AES_128_CBC_SHA","port":443,"evidence":"weak cipher suite offered"}`),
			ObservedAtUnixMicros: 1_800_000_000_000_000, ScanId: "scan-1", Checker: "tls"})
		if err != nil {
			b.Fatal(err)
		}
		recs[i] = wal.Record{Seq: uint64(i + 1), Payload: p, AppendedAt: time.Now()}
	}
	s := &Shipper{cfg: ShipperConfig{EdgeID: "eu/n1"}}
	b.Run("bytes", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := s.build(recs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
	})
	b.Run("proto", func(b *testing.B) {
		for b.Loop() {
			batch, _ := protoBatch(s.cfg.EdgeID, recs)
			if _, err := proto.Marshal(&longhaulv1.ShipRequest{Kind: &longhaulv1.ShipRequest_Batch{Batch: batch}}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
	})
}
