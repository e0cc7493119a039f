package wire

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"pgregory.net/rapid"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// TestAppendInsightRecordIsProto: the record written by hand is the one
// proto writes, byte for byte, and InsightRecordSize is its size.
func TestAppendInsightRecordIsProto(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInsight(t)
		want, err := proto.Marshal(&longhaulv1.WalRecord{Kind: &longhaulv1.WalRecord_Insight{Insight: in}})
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte(rapid.SampledFrom([]string{"", "xyz"}).Draw(t, "prefix"))
		got := AppendInsightRecord(prefix, in)
		if string(got[len(prefix):]) != string(want) || string(got[:len(prefix)]) != string(prefix) {
			t.Fatalf("AppendInsightRecord wrote %x after %x, proto %x", got[len(prefix):], prefix, want)
		}
		if n := InsightRecordSize(in); n != len(want) {
			t.Fatalf("InsightRecordSize = %d, proto wrote %d bytes", n, len(want))
		}
	})
}

func genPushInsight(t *rapid.T) *longhaulv1.Insight {
	str := func(label string) string {
		return rapid.SampledFrom([]string{"", "a", "host.example", "ü", "scan-1"}).Draw(t, label)
	}
	in := &longhaulv1.Insight{
		AccountId: str("account"), Asset: str("asset"), Kind: str("kind"), Subject: str("subject"),
		Severity:    longhaulv1.Severity(rapid.Int32Range(-2, 6).Draw(t, "severity")),
		DetailsJson: rapid.SampledFrom([]string{"", "{}", `{"a": [1, 2]}`}).Draw(t, "details_json"),
		ScanId:      str("scan"), Checker: str("checker"),
	}
	if rapid.Bool().Draw(t, "observed") {
		in.ObservedAt = &timestamppb.Timestamp{Seconds: rapid.Int64().Draw(t, "seconds"), Nanos: rapid.Int32().Draw(t, "nanos")}
	}
	return in
}

// TestDecodePushRequestReadsWhatProtoWrites: a request proto encodes is
// read by DecodePushRequest as proto reads it, unless an insight has
// Struct details, which it leaves to proto.
func TestDecodePushRequestReadsWhatProtoWrites(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		want := &longhaulv1.PushRequest{Insights: rapid.SliceOfN(rapid.Custom(genPushInsight), 0, 20).Draw(t, "insights")}
		structured := len(want.Insights) > 0 && rapid.Bool().Draw(t, "struct")
		if structured {
			want.Insights[0].Details = &structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewNumberValue(1)}}
		}
		b, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var got longhaulv1.PushRequest
		switch ok := DecodePushRequest(b, &got); {
		case structured && ok:
			t.Fatalf("DecodePushRequest read Struct details")
		case structured:
			return
		case !ok:
			t.Fatalf("DecodePushRequest refused what proto wrote: %x", b)
		}
		for i := range b {
			b[i] = 0xff // the caller's buffer may be reused: nothing read may share it
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("read %v, want %v", &got, want)
		}
	})
}

// FuzzDecodePushRequest: whatever DecodePushRequest accepts, proto reads
// as the same request.
func FuzzDecodePushRequest(f *testing.F) {
	for _, r := range []*longhaulv1.PushRequest{
		{Insights: []*longhaulv1.Insight{{AccountId: "a", Asset: "x", Kind: "k", Subject: "s", Severity: 3, DetailsJson: `{"a": 1}`,
			ObservedAt: &timestamppb.Timestamp{Seconds: 1_800_000_000, Nanos: 5}, ScanId: "s", Checker: "c"}, {}}},
		{},
	} {
		p, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add([]byte("\x0a\x04\x3a\x02\x08\x01"))
	f.Add([]byte("\x0a\x03\x12\x01\xff"))
	f.Add([]byte("\x0a\x08\x3a\x02\x08\x01\x3a\x02\x10\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got longhaulv1.PushRequest
		if !DecodePushRequest(b, &got) {
			if got.Insights != nil {
				t.Fatalf("DecodePushRequest refused %x but filled the request", b)
			}
			return
		}
		var want longhaulv1.PushRequest
		if err := proto.Unmarshal(b, &want); err != nil {
			t.Fatalf("DecodePushRequest accepted %x, which proto refuses: %v", b, err)
		}
		if !proto.Equal(&got, &want) {
			t.Fatalf("DecodePushRequest read %v, proto %v", &got, &want)
		}
	})
}
