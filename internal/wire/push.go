package wire

import (
	"unicode/utf8"

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
	count := 0
	for i := 0; i < len(b); {
		num, typ, l := protowire.ConsumeTag(b[i:])
		if l < 0 || num != fieldPushInsights || typ != protowire.BytesType {
			return false
		}
		i += l
		if l = protowire.ConsumeFieldValue(num, typ, b[i:]); l < 0 {
			return false
		}
		i += l
		count++
	}
	str := string(b) // the caller's b may be reused
	vals := make([]longhaulv1.Insight, count)
	times := make([]timestamppb.Timestamp, count)
	ins := make([]*longhaulv1.Insight, count)
	for i, k := 0, 0; i < len(b); k++ {
		_, _, l := protowire.ConsumeTag(b[i:])
		i += l
		v, l := protowire.ConsumeBytes(b[i:])
		start := i + l - len(v)
		i += l
		if !decodePushInsight(v, str[start:i], &vals[k], &times[k]) {
			return false
		}
		ins[k] = &vals[k]
	}
	req.Reset()
	req.Insights = ins
	return true
}

// decodePushInsight reads an Insight's bytes raw into in, and its
// observed_at into ts; str holds the same bytes as raw (see DecodeInsight).
func decodePushInsight(raw []byte, str string, in *longhaulv1.Insight, ts *timestamppb.Timestamp) bool {
	for i := 0; i < len(raw); {
		num, typ, l := protowire.ConsumeTag(raw[i:])
		if l < 0 {
			return false
		}
		i += l
		switch num {
		case 1, 2, 3, 4, 8, 9, fieldInsightDetailsTxt:
			if typ != protowire.BytesType {
				return false
			}
			v, l := protowire.ConsumeBytes(raw[i:])
			if l < 0 {
				return false
			}
			start := i + l - len(v)
			i += l
			s := str[start:i]
			if !utf8.ValidString(s) {
				return false
			}
			switch num {
			case 1:
				in.AccountId = s
			case 2:
				in.Asset = s
			case 3:
				in.Kind = s
			case 4:
				in.Subject = s
			case 8:
				in.ScanId = s
			case 9:
				in.Checker = s
			case fieldInsightDetailsTxt:
				in.DetailsJson = s
			}
		case fieldInsightSeverity:
			if typ != protowire.VarintType {
				return false
			}
			v, l := protowire.ConsumeVarint(raw[i:])
			if l < 0 {
				return false
			}
			i += l
			in.Severity = longhaulv1.Severity(int32(v))
		case fieldInsightTimestamp:
			if typ != protowire.BytesType {
				return false
			}
			v, l := protowire.ConsumeBytes(raw[i:])
			if l < 0 || !decodeTimestamp(v, ts) { // a second one merges into the first, as in proto
				return false
			}
			i += l
			in.ObservedAt = ts
		default: // details as a Struct (6) among others
			return false
		}
	}
	return true
}

// decodeTimestamp reads a google.protobuf.Timestamp's bytes into ts.
func decodeTimestamp(raw []byte, ts *timestamppb.Timestamp) bool {
	for i := 0; i < len(raw); {
		num, typ, l := protowire.ConsumeTag(raw[i:])
		if l < 0 || typ != protowire.VarintType || (num != fieldTimestampSeconds && num != fieldTimestampNanos) {
			return false
		}
		i += l
		v, l := protowire.ConsumeVarint(raw[i:])
		if l < 0 {
			return false
		}
		i += l
		if num == fieldTimestampSeconds {
			ts.Seconds = int64(v)
		} else {
			ts.Nanos = int32(v)
		}
	}
	return true
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
