package edge

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/coalesce"
)

// The shipper does not decode a WAL record into a message and encode it
// again into the batch. An insight's record is a WalRecord whose field 1
// holds the BatchInsight's encoding, and a Batch's insights field holds
// exactly that encoding too: the shipper reads what collapsing needs
// straight from the bytes (decodeInsight), and copies the winners' bytes
// into a batch it encodes by hand (encodeBatch). A record in any other
// shape (a completion, or an insight with a field this version does not
// know) goes through proto as before.
//
//	record:  0a <len> [BatchInsight bytes]
//	batch:   12 <len> [Batch: 0a edge_id, 10 first_seq, 18 last_seq, 38 oldest,
//	                   22 <len> [BatchInsight bytes][50 first_seen]  per winner,
//	                   2a completions, 32 tallies]
//
// What decodeInsight accepts, proto.Unmarshal accepts with the same
// values (FuzzDecodeInsight checks it), so the primary reads the copied
// bytes as the edge read them.

// decodeInsight reads an insight record's payload into in, whose strings
// share one copy of the payload and whose details are a slice of it. It
// returns the BatchInsight's bytes within payload; ok is false for any
// payload that is not an insight record of the fields 1-10 with their
// wire types and valid UTF-8 (decode those with DecodeRecord).
func decodeInsight(payload []byte, in *longhaulv1.BatchInsight) (raw []byte, ok bool) {
	if len(payload) < 1 || payload[0] != 0x0a { // field 1, length-delimited
		return nil, false
	}
	n, l := protowire.ConsumeVarint(payload[1:])
	if l < 0 || n != uint64(len(payload)-1-l) {
		return nil, false
	}
	raw = payload[1+l:]
	str := string(raw)
	for i := 0; i < len(raw); {
		num, typ, l := protowire.ConsumeTag(raw[i:])
		if l < 0 {
			return nil, false
		}
		i += l
		switch {
		case typ == protowire.BytesType && num <= 9 && num != 5 && num != 7:
			v, l := protowire.ConsumeBytes(raw[i:])
			if l < 0 {
				return nil, false
			}
			start := i + l - len(v)
			i += l
			if num == 6 {
				in.Details = v[:len(v):len(v)]
				continue
			}
			s := str[start:i]
			if !utf8.ValidString(s) {
				return nil, false
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
		case typ == protowire.VarintType && (num == 5 || num == 7 || num == 10):
			v, l := protowire.ConsumeVarint(raw[i:])
			if l < 0 {
				return nil, false
			}
			i += l
			switch num {
			case 5:
				in.Severity = longhaulv1.Severity(int32(v))
			case 7:
				in.ObservedAtUnixMicros = int64(v)
			case 10:
				in.FirstSeenUnixMicros = int64(v)
			}
		default:
			return nil, false
		}
	}
	return raw, true
}

// shipBatch is a ShipRequest holding a batch, encoded by encodeBatch; the
// stream's codec (shipCodec) sends its bytes as they are.
type shipBatch []byte

// batchParts is what encodeBatch writes: winners' bytes are raws[w.Index].
type batchParts struct {
	edgeID      string
	first, last uint64
	winners     []coalesce.Obs
	raws        [][]byte
	completions []*longhaulv1.ScanCompletion
	tallies     []coalesce.Tally
	oldest      int64
}

// Field numbers of longhaul.v1.Batch and ShipRequest.batch.
const (
	fieldShipRequestBatch = 2
	fieldBatchEdgeID      = 1
	fieldBatchFirstSeq    = 2
	fieldBatchLastSeq     = 3
	fieldBatchInsights    = 4
	fieldBatchCompletions = 5
	fieldBatchTallies     = 6
	fieldBatchOldest      = 7
	fieldInsightFirstSeen = 10
)

// encodeBatch encodes p as a ShipRequest holding a Batch. A winner
// collapsed from earlier observations gets its first_seen_unix_micros
// appended after its bytes (the last occurrence of a field is its value).
func encodeBatch(p batchParts) (shipBatch, error) {
	var opts proto.MarshalOptions
	insight := func(w coalesce.Obs) (size int, firstSeen bool) {
		size = len(p.raws[w.Index])
		if w.FirstSeen < w.In.ObservedAtUnixMicros {
			size += protowire.SizeTag(fieldInsightFirstSeen) + protowire.SizeVarint(uint64(w.FirstSeen))
			firstSeen = true
		}
		return size, firstSeen
	}
	size := 0
	if p.edgeID != "" {
		size += protowire.SizeTag(fieldBatchEdgeID) + protowire.SizeBytes(len(p.edgeID))
	}
	varints := []struct {
		num protowire.Number
		v   uint64
	}{{fieldBatchFirstSeq, p.first}, {fieldBatchLastSeq, p.last}, {fieldBatchOldest, uint64(p.oldest)}}
	for _, f := range varints {
		if f.v != 0 {
			size += protowire.SizeTag(f.num) + protowire.SizeVarint(f.v)
		}
	}
	for _, w := range p.winners {
		n, _ := insight(w)
		size += protowire.SizeTag(fieldBatchInsights) + protowire.SizeBytes(n)
	}
	for _, c := range p.completions {
		size += protowire.SizeTag(fieldBatchCompletions) + protowire.SizeBytes(opts.Size(c))
	}
	tallies := make([]*longhaulv1.ScanTally, len(p.tallies))
	for i, t := range p.tallies {
		tallies[i] = &longhaulv1.ScanTally{ScanId: t.ScanID, Count: t.Count, MinObservedAtUnixMicros: t.MinObserved}
		size += protowire.SizeTag(fieldBatchTallies) + protowire.SizeBytes(opts.Size(tallies[i]))
	}

	b := make([]byte, 0, protowire.SizeTag(fieldShipRequestBatch)+protowire.SizeBytes(size))
	b = protowire.AppendTag(b, fieldShipRequestBatch, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	body := len(b)
	if p.edgeID != "" {
		b = protowire.AppendTag(b, fieldBatchEdgeID, protowire.BytesType)
		b = protowire.AppendString(b, p.edgeID)
	}
	for _, f := range varints {
		if f.v != 0 {
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, f.v)
		}
	}
	for _, w := range p.winners {
		n, firstSeen := insight(w)
		b = protowire.AppendTag(b, fieldBatchInsights, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = append(b, p.raws[w.Index]...)
		if firstSeen {
			b = protowire.AppendTag(b, fieldInsightFirstSeen, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(w.FirstSeen))
		}
	}
	var err error
	for _, c := range p.completions {
		b = protowire.AppendTag(b, fieldBatchCompletions, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(opts.Size(c)))
		if b, err = opts.MarshalAppend(b, c); err != nil {
			return nil, fmt.Errorf("edge: ship: encode a completion: %w", err)
		}
	}
	for _, t := range tallies {
		b = protowire.AppendTag(b, fieldBatchTallies, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(opts.Size(t)))
		if b, err = opts.MarshalAppend(b, t); err != nil {
			return nil, fmt.Errorf("edge: ship: encode a tally: %w", err)
		}
	}
	if len(b)-body != size {
		return nil, fmt.Errorf("edge: ship: encoded a batch of %d bytes, sized %d", len(b)-body, size)
	}
	return b, nil
}

// shipCodec is the shipping stream's codec: proto, but a shipBatch is sent
// as the bytes it already is.
type shipCodec struct{}

func (shipCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(shipBatch); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return protoCodec().Marshal(v)
}

func (shipCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return protoCodec().Unmarshal(data, v)
}

func (shipCodec) Name() string { return "proto" }

func protoCodec() encoding.CodecV2 { return encoding.GetCodecV2("proto") }
