// Package wire reads and writes the hot path's protobuf messages by hand,
// without proto's reflection and allocations per field of each insight:
//
//   - The edge reads a PushRequest into insights whose strings share one
//     copy of it (DecodePushRequest), and writes each accepted insight's WAL
//     record (AppendInsightRecord, byte for byte what proto writes).
//   - An insight's WAL record is a WalRecord whose field 1 holds the
//     BatchInsight's encoding, and a Batch's insights field holds exactly
//     that encoding too. The edge's shipper reads what collapsing needs
//     straight from a record's bytes (DecodeInsight) and copies the
//     winners' bytes into the batch it encodes (Encoded).
//   - The primary reads a ShipRequest holding a batch into insights whose
//     strings share one copy of it (DecodeShipRequest).
//
// The decoders accept only what proto.Unmarshal accepts, and read it as
// proto does (the rapid tests and fuzz targets check it); for anything in
// another shape (Struct details, a field this version does not know, a
// Hello) they report false, and the caller falls back to proto. Codec puts
// them on a gRPC server or stream.
package wire

import (
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// Field numbers of the messages read and written here.
const (
	FieldRecordInsight     = 1 // WalRecord.insight
	FieldShipRequestBatch  = 2 // ShipRequest.batch
	FieldBatchEdgeID       = 1
	FieldBatchFirstSeq     = 2
	FieldBatchLastSeq      = 3
	FieldBatchInsights     = 4
	FieldBatchCompletions  = 5
	FieldBatchTallies      = 6
	FieldBatchOldest       = 7
	FieldInsightFirstSeen  = 10
	fieldInsightSeverity   = 5
	fieldInsightDetails    = 6
	fieldInsightObservedAt = 7
)

// RecordInsight returns the BatchInsight bytes of an insight's WAL record
// (field 1 and nothing else); ok is false for any other payload.
func RecordInsight(payload []byte) (raw []byte, ok bool) {
	if len(payload) < 1 || payload[0] != byte(protowire.EncodeTag(FieldRecordInsight, protowire.BytesType)) {
		return nil, false
	}
	n, l := protowire.ConsumeVarint(payload[1:])
	if l < 0 || n != uint64(len(payload)-1-l) {
		return nil, false
	}
	return payload[1+l:], true
}

// DecodeInsight reads a BatchInsight's bytes raw into in. str must hold
// the same bytes as raw (string(raw), or a substring of a larger copy at
// the same offsets): in's strings are substrings of it, and its details a
// slice of raw. ok is false when raw holds a field other than 1-10 with
// their wire types, or a string that is not valid UTF-8.
func DecodeInsight(raw []byte, str string, in *longhaulv1.BatchInsight) (ok bool) {
	for i := 0; i < len(raw); {
		num, typ, l := protowire.ConsumeTag(raw[i:])
		if l < 0 {
			return false
		}
		i += l
		switch num {
		case 1, 2, 3, 4, 8, 9, fieldInsightDetails: // string, or bytes
			if typ != protowire.BytesType {
				return false
			}
			v, l := protowire.ConsumeBytes(raw[i:])
			if l < 0 {
				return false
			}
			start := i + l - len(v)
			i += l
			if num == fieldInsightDetails {
				in.Details = v[:len(v):len(v)]
				continue
			}
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
			}
		case fieldInsightSeverity, fieldInsightObservedAt, FieldInsightFirstSeen:
			if typ != protowire.VarintType {
				return false
			}
			v, l := protowire.ConsumeVarint(raw[i:])
			if l < 0 {
				return false
			}
			i += l
			switch num {
			case fieldInsightSeverity:
				in.Severity = longhaulv1.Severity(int32(v))
			case fieldInsightObservedAt:
				in.ObservedAtUnixMicros = int64(v)
			case FieldInsightFirstSeen:
				in.FirstSeenUnixMicros = int64(v)
			}
		default:
			return false
		}
	}
	return true
}

// DecodeShipRequest reads b, a ShipRequest holding a Batch, into req. The
// insights' strings share one copy of b, their details a second; their
// messages are allocated together. ok is false (and req untouched) for a
// request that is not a batch, or holds a field DecodeInsight or this
// function does not read: decode that one with proto.
func DecodeShipRequest(b []byte, req *longhaulv1.ShipRequest) (ok bool) {
	if len(b) < 1 || b[0] != byte(protowire.EncodeTag(FieldShipRequestBatch, protowire.BytesType)) {
		return false
	}
	n, l := protowire.ConsumeVarint(b[1:])
	if l < 0 || n != uint64(len(b)-1-l) {
		return false
	}
	body := b[1+l:]

	// A first pass checks the framing and counts the insights, so that
	// their messages are one allocation.
	count := 0
	for i := 0; i < len(body); {
		num, typ, l := protowire.ConsumeTag(body[i:])
		if l < 0 {
			return false
		}
		i += l
		if num == FieldBatchInsights && typ == protowire.BytesType {
			count++
		}
		l = protowire.ConsumeFieldValue(num, typ, body[i:])
		if l < 0 {
			return false
		}
		i += l
	}

	buf := append([]byte(nil), body...) // the caller's b may be reused
	str := string(buf)
	batch := &longhaulv1.Batch{Insights: make([]*longhaulv1.BatchInsight, 0, count)}
	vals := make([]longhaulv1.BatchInsight, count)
	for i := 0; i < len(buf); {
		num, typ, l := protowire.ConsumeTag(buf[i:])
		i += l
		switch {
		case typ == protowire.BytesType && (num == FieldBatchEdgeID || num == FieldBatchInsights || num == FieldBatchCompletions || num == FieldBatchTallies):
			v, l := protowire.ConsumeBytes(buf[i:])
			start := i + l - len(v)
			i += l
			switch num {
			case FieldBatchEdgeID:
				s := str[start:i]
				if !utf8.ValidString(s) {
					return false
				}
				batch.EdgeId = s
			case FieldBatchInsights:
				in := &vals[len(batch.Insights)]
				if !DecodeInsight(v, str[start:i], in) {
					return false
				}
				batch.Insights = append(batch.Insights, in)
			case FieldBatchCompletions:
				c := &longhaulv1.ScanCompletion{}
				if proto.Unmarshal(v, c) != nil {
					return false
				}
				batch.Completions = append(batch.Completions, c)
			case FieldBatchTallies:
				t := &longhaulv1.ScanTally{}
				if proto.Unmarshal(v, t) != nil {
					return false
				}
				batch.Tallies = append(batch.Tallies, t)
			}
		case typ == protowire.VarintType && (num == FieldBatchFirstSeq || num == FieldBatchLastSeq || num == FieldBatchOldest):
			v, l := protowire.ConsumeVarint(buf[i:])
			i += l
			switch num {
			case FieldBatchFirstSeq:
				batch.FirstSeq = v
			case FieldBatchLastSeq:
				batch.LastSeq = v
			case FieldBatchOldest:
				batch.OldestUnixMicros = int64(v)
			}
		default:
			return false
		}
	}
	req.Reset()
	req.Kind = &longhaulv1.ShipRequest_Batch{Batch: batch}
	return true
}

// Encoded is a message already encoded: Codec sends its bytes as they are.
type Encoded []byte

// Codec is proto, but sends an Encoded as it is, and reads a ShipRequest
// with DecodeShipRequest and a PushRequest with DecodePushRequest. Its name
// is proto's: the other end needs nothing of it.
type Codec struct{}

// Marshal encodes v.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(Encoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return protoCodec().Marshal(v)
}

// Unmarshal decodes data into v.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *longhaulv1.ShipRequest:
		b := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer b.Free()
		if DecodeShipRequest(b.ReadOnlyData(), m) {
			return nil
		}
	case *longhaulv1.PushRequest:
		b := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer b.Free()
		if DecodePushRequest(b.ReadOnlyData(), m) {
			return nil
		}
	}
	return protoCodec().Unmarshal(data, v)
}

// Name is "proto".
func (Codec) Name() string { return "proto" }

func protoCodec() encoding.CodecV2 { return encoding.GetCodecV2("proto") }
