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
// A string read from a request keeps the whole request's copy alive: what
// outlives the request (a map key, a metric label) must strings.Clone it.
// Today nothing does.
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
	return sole(payload, FieldRecordInsight)
}

// sole returns the bytes of b's one field, when b is exactly one
// length-delimited field num.
func sole(b []byte, num protowire.Number) ([]byte, bool) {
	if len(b) < 1 || b[0] != byte(protowire.EncodeTag(num, protowire.BytesType)) {
		return nil, false
	}
	n, l := protowire.ConsumeVarint(b[1:])
	if l < 0 || n != uint64(len(b)-1-l) {
		return nil, false
	}
	return b[1+l:], true
}

// field is one field of a message, as walk reads it.
type field struct {
	num   protowire.Number
	bytes bool   // length-delimited, in v and s; else a varint, in x
	v     []byte // the field's bytes
	s     string // the same bytes, from walk's str
	x     uint64
}

// text returns a length-delimited field as a string, and whether it is
// one: valid UTF-8, as proto requires of a string field.
func (f field) text() (string, bool) {
	return f.s, f.bytes && utf8.ValidString(f.s)
}

// walk calls each with the fields of raw, in order; str holds the same
// bytes as raw, at the same offsets. It returns false at malformed bytes,
// at a field neither varint nor length-delimited, or as soon as each does.
func walk(raw []byte, str string, each func(field) bool) bool {
	for i := 0; i < len(raw); {
		num, typ, l := protowire.ConsumeTag(raw[i:])
		if l < 0 {
			return false
		}
		i += l
		f := field{num: num}
		switch typ {
		case protowire.BytesType:
			v, l := protowire.ConsumeBytes(raw[i:])
			if l < 0 {
				return false
			}
			i += l
			f.bytes, f.v, f.s = true, v, str[i-len(v):i]
		case protowire.VarintType:
			x, l := protowire.ConsumeVarint(raw[i:])
			if l < 0 {
				return false
			}
			i += l
			f.x = x
		default:
			return false
		}
		if !each(f) {
			return false
		}
	}
	return true
}

// insightText sets in the string fields Insight and BatchInsight share:
// account_id 1, asset 2, kind 3, subject 4, scan_id 8, checker 9. It
// returns whether f is one of them, valid.
func insightText(f field, account, asset, kind, subject, scan, checker *string) bool {
	var to *string
	switch f.num {
	case 1:
		to = account
	case 2:
		to = asset
	case 3:
		to = kind
	case 4:
		to = subject
	case 8:
		to = scan
	case 9:
		to = checker
	default:
		return false
	}
	s, ok := f.text()
	*to = s
	return ok
}

// DecodeInsight reads a BatchInsight's bytes raw into in. str must hold
// the same bytes as raw (string(raw), or a substring of a larger copy at
// the same offsets): in's strings are substrings of it, and its details a
// slice of raw. ok is false when raw holds a field other than 1-10 with
// their wire types, or a string that is not valid UTF-8.
func DecodeInsight(raw []byte, str string, in *longhaulv1.BatchInsight) (ok bool) {
	return walk(raw, str, func(f field) bool {
		switch {
		case f.num == fieldInsightDetails:
			in.Details = f.v[:len(f.v):len(f.v)]
			return f.bytes
		case f.num == fieldInsightSeverity && !f.bytes:
			in.Severity = longhaulv1.Severity(int32(f.x))
		case f.num == fieldInsightObservedAt && !f.bytes:
			in.ObservedAtUnixMicros = int64(f.x)
		case f.num == FieldInsightFirstSeen && !f.bytes:
			in.FirstSeenUnixMicros = int64(f.x)
		default:
			return insightText(f, &in.AccountId, &in.Asset, &in.Kind, &in.Subject, &in.ScanId, &in.Checker)
		}
		return true
	})
}

// DecodeShipRequest reads b, a ShipRequest holding a Batch, into req. The
// insights' strings share one copy of b, their details a second; their
// messages are allocated together. ok is false (and req untouched) for a
// request that is not a batch, or holds a field DecodeInsight or this
// function does not read: decode that one with proto.
func DecodeShipRequest(b []byte, req *longhaulv1.ShipRequest) (ok bool) {
	body, ok := sole(b, FieldShipRequestBatch)
	if !ok {
		return false
	}
	buf := append([]byte(nil), body...) // the caller's b may be reused
	str := string(buf)

	// A first pass checks the framing and counts the insights, so that
	// their messages are one allocation.
	count := 0
	if !walk(buf, str, func(f field) bool {
		if f.num == FieldBatchInsights {
			count++
		}
		return true
	}) {
		return false
	}

	batch := &longhaulv1.Batch{Insights: make([]*longhaulv1.BatchInsight, 0, count)}
	vals := make([]longhaulv1.BatchInsight, count)
	if !walk(buf, str, func(f field) bool {
		switch {
		case f.num == FieldBatchEdgeID:
			s, ok := f.text()
			batch.EdgeId = s
			return ok
		case f.num == FieldBatchInsights && f.bytes:
			in := &vals[len(batch.Insights)]
			batch.Insights = append(batch.Insights, in)
			return DecodeInsight(f.v, f.s, in)
		case f.num == FieldBatchCompletions && f.bytes:
			c := &longhaulv1.ScanCompletion{}
			batch.Completions = append(batch.Completions, c)
			return proto.Unmarshal(f.v, c) == nil
		case f.num == FieldBatchTallies && f.bytes:
			t := &longhaulv1.ScanTally{}
			batch.Tallies = append(batch.Tallies, t)
			return proto.Unmarshal(f.v, t) == nil
		case f.num == FieldBatchFirstSeq && !f.bytes:
			batch.FirstSeq = f.x
		case f.num == FieldBatchLastSeq && !f.bytes:
			batch.LastSeq = f.x
		case f.num == FieldBatchOldest && !f.bytes:
			batch.OldestUnixMicros = int64(f.x)
		default:
			return false
		}
		return true
	}) {
		return false
	}
	req.Reset()
	req.Kind = &longhaulv1.ShipRequest_Batch{Batch: batch}
	return true
}

// Encoded is a message already encoded: Codec sends its bytes as they are.
type Encoded []byte

// Codec is proto, but sends an Encoded as it is, and reads a ShipRequest
// with DecodeShipRequest and a PushRequest with DecodePushRequest. Its name
// is proto's: the other end needs nothing of it. The edge and the primary
// put it on their servers and the shipping stream with
// grpc.ForceServerCodecV2 and grpc.ForceCodecV2, which grpc-go marks
// experimental; should they go, registering it as "proto"
// (encoding.RegisterCodecV2) does the same for the whole process.
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
