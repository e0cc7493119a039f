package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// On-disk format constants. Changing any of them changes the disk format:
// bump recordVersion (or metaVersion) and keep decoding the old one.
const (
	// recordPrefix starts every record key; meta keys sort before it, so a
	// range deletion over record keys never touches them.
	recordPrefix byte = 'r' // disk format
	// recordKeyLen is the prefix byte plus the big-endian sequence number.
	recordKeyLen = 1 + 8 // disk format

	// recordVersion is the first byte of every record value.
	recordVersion byte = 1 // disk format
	// recordHeaderLen is the fixed part of a record value before the payload:
	// version(1) appendedAt(8) end(8) payloadLen(4) crc(4).
	recordHeaderLen = 1 + 8 + 8 + 4 + 4 // disk format

	// metaVersion is the first byte of the meta value.
	metaVersion byte = 1 // disk format
	// metaLen is the meta value's length: version(1) truncatedSeq(8)
	// truncatedEnd(8) crc(4).
	metaLen = 1 + 8 + 8 + 4 // disk format
)

// metaKey holds the truncation point. It sorts before every record key.
var metaKey = []byte("m") // disk format

// RecordOverhead is what each record costs against the quota beyond its
// payload: its key and the fixed header of its value.
const RecordOverhead = recordKeyLen + recordHeaderLen

// maxPayloadLen is the largest payload the format can describe.
const maxPayloadLen uint64 = 1<<32 - 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by the errors for a record or meta value that fails
// validation (wrong length, unknown version, checksum mismatch) and for a hole
// in the sequence. The log's data cannot be trusted past that point.
var ErrCorrupt = errors.New("wal: corrupt")

// Record is one appended payload.
type Record struct {
	// Seq is the record's sequence number: contiguous and strictly
	// increasing, starting at 1, never reused, across restarts too.
	Seq uint64
	// AppendedAt is when Append was called for the record's group.
	AppendedAt time.Time
	// Payload is the opaque bytes given to Append. Read returns a copy that
	// the caller owns.
	Payload []byte
}

// recordSize is what a record with a payload of n bytes counts against the
// quota: exactly its key and value lengths.
func recordSize(n int) int64 { return int64(RecordOverhead + n) }

func putRecordKey(dst []byte, seq uint64) {
	dst[0] = recordPrefix
	binary.BigEndian.PutUint64(dst[1:], seq)
}

func recordKey(seq uint64) []byte {
	k := make([]byte, recordKeyLen)
	putRecordKey(k, seq)
	return k
}

// recordKeyEnd is the exclusive upper bound of all record keys.
var recordKeyEnd = []byte{recordPrefix + 1}

// encodeRecordValue writes the value of the record with key into dst, which
// must be exactly recordHeaderLen+len(payload) long. end is the log's
// cumulative accounted size (sum of recordSize) through this record.
func encodeRecordValue(dst, key []byte, appendedAt int64, end uint64, payload []byte) {
	dst[0] = recordVersion
	binary.BigEndian.PutUint64(dst[1:9], uint64(appendedAt))
	binary.BigEndian.PutUint64(dst[9:17], end)
	binary.BigEndian.PutUint32(dst[17:21], uint32(len(payload)))
	copy(dst[recordHeaderLen:], payload)
	binary.BigEndian.PutUint32(dst[21:25], recordChecksum(key, dst))
}

// recordChecksum covers the key (so a value cannot pass under another
// sequence number), the header fields before the checksum, and the payload.
func recordChecksum(key, value []byte) uint32 {
	c := crc32.Update(0, castagnoli, key)
	c = crc32.Update(c, castagnoli, value[:21])
	return crc32.Update(c, castagnoli, value[recordHeaderLen:])
}

// decodeRecord validates a record's key and value and returns it. The
// returned Payload aliases value.
func decodeRecord(key, value []byte) (Record, error) {
	r, _, err := decodeRecordEnd(key, value)
	return r, err
}

// decodeRecordEnd is decodeRecord that also returns the record's cumulative
// end offset.
func decodeRecordEnd(key, value []byte) (Record, uint64, error) {
	if len(key) != recordKeyLen || key[0] != recordPrefix {
		return Record{}, 0, fmt.Errorf("%w: record key %x: want %d bytes starting %q", ErrCorrupt, key, recordKeyLen, recordPrefix)
	}
	seq := binary.BigEndian.Uint64(key[1:])
	if len(value) < recordHeaderLen {
		return Record{}, 0, fmt.Errorf("%w: record %d: value of %d bytes is shorter than the %d-byte header", ErrCorrupt, seq, len(value), recordHeaderLen)
	}
	if value[0] != recordVersion {
		return Record{}, 0, fmt.Errorf("%w: record %d: unknown format version %d", ErrCorrupt, seq, value[0])
	}
	n := binary.BigEndian.Uint32(value[17:21])
	if uint64(n) != uint64(len(value)-recordHeaderLen) {
		return Record{}, 0, fmt.Errorf("%w: record %d: payload length %d, value holds %d", ErrCorrupt, seq, n, len(value)-recordHeaderLen)
	}
	if got, want := recordChecksum(key, value), binary.BigEndian.Uint32(value[21:25]); got != want {
		return Record{}, 0, fmt.Errorf("%w: record %d: checksum %08x, want %08x", ErrCorrupt, seq, got, want)
	}
	r := Record{
		Seq:        seq,
		AppendedAt: time.Unix(0, int64(binary.BigEndian.Uint64(value[1:9]))),
		Payload:    value[recordHeaderLen:],
	}
	return r, binary.BigEndian.Uint64(value[9:17]), nil
}

// meta is the durable truncation point: every record up to and including
// truncatedSeq is gone, and truncatedEnd is the cumulative accounted size
// through it, so live bytes are lastEnd - truncatedEnd.
type meta struct {
	truncatedSeq uint64
	truncatedEnd uint64
}

func encodeMeta(m meta) []byte {
	v := make([]byte, metaLen)
	v[0] = metaVersion
	binary.BigEndian.PutUint64(v[1:9], m.truncatedSeq)
	binary.BigEndian.PutUint64(v[9:17], m.truncatedEnd)
	binary.BigEndian.PutUint32(v[17:21], crc32.Checksum(v[:17], castagnoli))
	return v
}

func decodeMeta(v []byte) (meta, error) {
	if len(v) != metaLen {
		return meta{}, fmt.Errorf("%w: meta value of %d bytes, want %d", ErrCorrupt, len(v), metaLen)
	}
	if v[0] != metaVersion {
		return meta{}, fmt.Errorf("%w: meta: unknown format version %d", ErrCorrupt, v[0])
	}
	if got, want := crc32.Checksum(v[:17], castagnoli), binary.BigEndian.Uint32(v[17:21]); got != want {
		return meta{}, fmt.Errorf("%w: meta: checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	return meta{
		truncatedSeq: binary.BigEndian.Uint64(v[1:9]),
		truncatedEnd: binary.BigEndian.Uint64(v[9:17]),
	}, nil
}
