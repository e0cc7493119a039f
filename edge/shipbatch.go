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
	var opts proto.MarshalOptions
	insight := func(w coalesce.Obs) (size int, firstSeen bool) {
		size = len(p.raws[w.Index])
		if w.FirstSeen < w.In.ObservedAtUnixMicros {
			size += protowire.SizeTag(wire.FieldInsightFirstSeen) + protowire.SizeVarint(uint64(w.FirstSeen))
			firstSeen = true
		}
		return size, firstSeen
	}
	size := 0
	if p.edgeID != "" {
		size += protowire.SizeTag(wire.FieldBatchEdgeID) + protowire.SizeBytes(len(p.edgeID))
	}
	varints := []struct {
		num protowire.Number
		v   uint64
	}{{wire.FieldBatchFirstSeq, p.first}, {wire.FieldBatchLastSeq, p.last}, {wire.FieldBatchOldest, uint64(p.oldest)}}
	for _, f := range varints {
		if f.v != 0 {
			size += protowire.SizeTag(f.num) + protowire.SizeVarint(f.v)
		}
	}
	for _, w := range p.winners {
		n, _ := insight(w)
		size += protowire.SizeTag(wire.FieldBatchInsights) + protowire.SizeBytes(n)
	}
	for _, c := range p.completions {
		size += protowire.SizeTag(wire.FieldBatchCompletions) + protowire.SizeBytes(opts.Size(c))
	}
	tallies := make([]*longhaulv1.ScanTally, len(p.tallies))
	for i, t := range p.tallies {
		tallies[i] = &longhaulv1.ScanTally{ScanId: t.ScanID, Count: t.Count, MinObservedAtUnixMicros: t.MinObserved}
		size += protowire.SizeTag(wire.FieldBatchTallies) + protowire.SizeBytes(opts.Size(tallies[i]))
	}

	b := make([]byte, 0, protowire.SizeTag(wire.FieldShipRequestBatch)+protowire.SizeBytes(size))
	b = protowire.AppendTag(b, wire.FieldShipRequestBatch, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	body := len(b)
	if p.edgeID != "" {
		b = protowire.AppendTag(b, wire.FieldBatchEdgeID, protowire.BytesType)
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
		b = protowire.AppendTag(b, wire.FieldBatchInsights, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = append(b, p.raws[w.Index]...)
		if firstSeen {
			b = protowire.AppendTag(b, wire.FieldInsightFirstSeen, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(w.FirstSeen))
		}
	}
	var err error
	for _, c := range p.completions {
		b = protowire.AppendTag(b, wire.FieldBatchCompletions, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(opts.Size(c)))
		if b, err = opts.MarshalAppend(b, c); err != nil {
			return nil, fmt.Errorf("edge: ship: encode a completion: %w", err)
		}
	}
	for _, t := range tallies {
		b = protowire.AppendTag(b, wire.FieldBatchTallies, protowire.BytesType)
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
