package wire

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// The edge's ingest: a PushRequest read into insights sharing one copy of
// it, and an accepted insight's WAL record written without reflection.

// Field numbers of longhaul.v1.Insight that are not strings.
const (
	fieldPushInsights      = 1
	fieldInsightTimestamp  = 7 // observed_at, a google.protobuf.Timestamp
	fieldTimestampSeconds  = 1
	fieldTimestampNanos    = 2
	fieldInsightDetailsTxt = 10 // details_json
)

// DecodePushRequest reads b, a PushRequest, into req. The insights'
// strings share one copy of b; their messages, and their timestamps, are
// one allocation each. ok is false (and req untouched) for a request with
// an insight whose details are a Struct (details_json is the fast form),
// or with a field this function does not read: decode that one with proto.
func DecodePushRequest(b []byte, req *longhaulv1.PushRequest) (ok bool) {
	str := string(b) // the caller's b may be reused
	count := 0
	if !walk(b, str, func(f field) bool {
		count++
		return f.num == fieldPushInsights && f.bytes
	}) {
		return false
	}
	vals := make([]longhaulv1.Insight, count)
	times := make([]timestamppb.Timestamp, count)
	ins := make([]*longhaulv1.Insight, 0, count)
	if !walk(b, str, func(f field) bool {
		k := len(ins)
		ins = append(ins, &vals[k])
		return decodePushInsight(f.v, f.s, &vals[k], &times[k])
	}) {
		return false
	}
	req.Reset()
	req.Insights = ins
	return true
}

// decodePushInsight reads an Insight's bytes raw into in, and its
// observed_at into ts; str holds the same bytes as raw (see DecodeInsight).
func decodePushInsight(raw []byte, str string, in *longhaulv1.Insight, ts *timestamppb.Timestamp) bool {
	return walk(raw, str, func(f field) bool {
		switch {
		case f.num == fieldInsightDetailsTxt:
			s, ok := f.text()
			in.DetailsJson = s
			return ok
		case f.num == fieldInsightSeverity && !f.bytes:
			in.Severity = longhaulv1.Severity(int32(f.x))
		case f.num == fieldInsightTimestamp && f.bytes:
			in.ObservedAt = ts // a second one merges into the first, as in proto
			return walk(f.v, f.s, func(f field) bool {
				switch {
				case f.num == fieldTimestampSeconds && !f.bytes:
					ts.Seconds = int64(f.x)
				case f.num == fieldTimestampNanos && !f.bytes:
					ts.Nanos = int32(f.x)
				default:
					return false
				}
				return true
			})
		default: // details as a Struct (6) among others
			return insightText(f, &in.AccountId, &in.Asset, &in.Kind, &in.Subject, &in.ScanId, &in.Checker)
		}
		return true
	})
}

// InsightRecordSize is the size of in's WAL record (AppendInsightRecord).
func InsightRecordSize(in *longhaulv1.BatchInsight) int {
	n := insightSize(in)
	return protowire.SizeTag(FieldRecordInsight) + protowire.SizeBytes(n)
}

// AppendInsightRecord appends in's WAL record, a WalRecord holding it, to
// b: the bytes proto.Marshal writes for it.
func AppendInsightRecord(b []byte, in *longhaulv1.BatchInsight) []byte {
	b = protowire.AppendTag(b, FieldRecordInsight, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(insightSize(in)))
	str := func(num protowire.Number, s string) {
		if s != "" {
			b = protowire.AppendTag(b, num, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	}
	varint := func(num protowire.Number, v uint64) {
		if v != 0 {
			b = protowire.AppendTag(b, num, protowire.VarintType)
			b = protowire.AppendVarint(b, v)
		}
	}
	str(1, in.AccountId)
	str(2, in.Asset)
	str(3, in.Kind)
	str(4, in.Subject)
	varint(fieldInsightSeverity, uint64(int64(in.Severity)))
	if len(in.Details) > 0 {
		b = protowire.AppendTag(b, fieldInsightDetails, protowire.BytesType)
		b = protowire.AppendBytes(b, in.Details)
	}
	varint(fieldInsightObservedAt, uint64(in.ObservedAtUnixMicros))
	str(8, in.ScanId)
	str(9, in.Checker)
	varint(FieldInsightFirstSeen, uint64(in.FirstSeenUnixMicros))
	return b
}

// insightSize is the size of in's encoding.
func insightSize(in *longhaulv1.BatchInsight) int {
	n := 0
	for _, s := range [...]string{in.AccountId, in.Asset, in.Kind, in.Subject, in.ScanId, in.Checker} {
		if s != "" {
			n += 1 + protowire.SizeBytes(len(s)) // tags 1-15 are one byte
		}
	}
	if len(in.Details) > 0 {
		n += 1 + protowire.SizeBytes(len(in.Details))
	}
	for _, v := range [...]uint64{uint64(int64(in.Severity)), uint64(in.ObservedAtUnixMicros), uint64(in.FirstSeenUnixMicros)} {
		if v != 0 {
			n += 1 + protowire.SizeVarint(v)
		}
	}
	return n
}
