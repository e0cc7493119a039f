package edge

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/coalesce"
	"github.com/longhaul/longhaul/internal/wire"
)

// The shipper does not decode a WAL record into a message and encode it
// again into the batch: it reads what collapsing needs straight from an
// insight record's bytes, and copies the winners' bytes into a batch it
// encodes by hand (see internal/wire). A record in any other shape (a
// completion, or an insight with a field this version does not know) goes
// through proto as before.
//
//	record:  0a <len> [BatchInsight bytes]
//	request: 12 <len> [Batch: 0a edge_id, 10 first_seq, 18 last_seq, 38 oldest,
//	                   22 <len> [BatchInsight bytes][50 first_seen]  per winner,
//	                   2a completions, 32 tallies]

// decodeInsight reads an insight record's payload into in (see
// wire.DecodeInsight) and returns the BatchInsight's bytes; ok is false
// for a payload to decode with DecodeRecord.
func decodeInsight(payload []byte, in *longhaulv1.BatchInsight) (raw []byte, ok bool) {
	raw, ok = wire.RecordInsight(payload)
	if !ok || !wire.DecodeInsight(raw, string(raw), in) {
		return nil, false
	}
	return raw, true
}

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

// encodeBatch encodes p as a ShipRequest holding a Batch. A winner
// collapsed from earlier observations gets its first_seen_unix_micros
// appended after its bytes (the last occurrence of a field is its value).
func encodeBatch(p batchParts) (wire.Encoded, error) {
	// The batch is written after room for the request's tag and length
	// (a varint of at most 5 bytes below 4 GiB), which go in front of it
	// once its size is known.
	const head = 1 + 5
	n := head + 64
	for _, w := range p.winners {
		n += len(p.raws[w.Index]) + 16
	}
	b := make([]byte, head, n)
	if p.edgeID != "" {
		b = protowire.AppendTag(b, wire.FieldBatchEdgeID, protowire.BytesType)
		b = protowire.AppendString(b, p.edgeID)
	}
	for _, f := range []struct {
		num protowire.Number
		v   uint64
	}{{wire.FieldBatchFirstSeq, p.first}, {wire.FieldBatchLastSeq, p.last}, {wire.FieldBatchOldest, uint64(p.oldest)}} {
		if f.v != 0 {
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, f.v)
		}
	}
	for _, w := range p.winners {
		raw := p.raws[w.Index]
		firstSeen := w.FirstSeen < w.In.ObservedAtUnixMicros
		size := len(raw)
		if firstSeen {
			size += protowire.SizeTag(wire.FieldInsightFirstSeen) + protowire.SizeVarint(uint64(w.FirstSeen))
		}
		b = protowire.AppendTag(b, wire.FieldBatchInsights, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(size))
		b = append(b, raw...)
		if firstSeen {
			b = protowire.AppendTag(b, wire.FieldInsightFirstSeen, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(w.FirstSeen))
		}
	}
	message := func(num protowire.Number, m proto.Message) error {
		mb, err := proto.Marshal(m)
		if err != nil {
			return fmt.Errorf("edge: ship: encode a batch's %T: %w", m, err)
		}
		b = protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), mb)
		return nil
	}
	for _, c := range p.completions {
		if err := message(wire.FieldBatchCompletions, c); err != nil {
			return nil, err
		}
	}
	for _, t := range p.tallies {
		if err := message(wire.FieldBatchTallies, &longhaulv1.ScanTally{ScanId: t.ScanID, Count: t.Count, MinObservedAtUnixMicros: t.MinObserved}); err != nil {
			return nil, err
		}
	}
	pre := protowire.AppendTag(make([]byte, 0, head), wire.FieldShipRequestBatch, protowire.BytesType)
	pre = protowire.AppendVarint(pre, uint64(len(b)-head))
	if len(pre) > head {
		return nil, fmt.Errorf("edge: ship: a batch of %d bytes is too large to send", len(b)-head)
	}
	start := head - len(pre)
	copy(b[start:], pre)
	return b[start:], nil
}
