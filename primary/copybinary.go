package primary

// The COPY path's encoder: rows written in PostgreSQL's binary COPY format
// by hand, for the staging table's fixed columns, instead of through pgx's
// generic CopyFrom, whose per-value type lookup (pgtype.Map.Encode) was the
// largest cost of the primary's CPU profile.
//
// The stream (all integers big-endian):
//
//	header   "PGCOPY\n\377\r\n\0"  int32 flags = 0  int32 extension length = 0
//	row      int16 field count (11), then per field:
//	             int32 length (-1 for NULL), then that many bytes
//	trailer  int16 -1
//
// Fields, in the order of insertColumns: account_id, asset, kind, subject,
// severity as text (the string's bytes); details as jsonb (version byte 1,
// then the JSON text; NULL when the slice is nil); scan_id, checker as text;
// first_seen_at, last_seen_at as timestamptz (int64 microseconds since
// 2000-01-01 00:00:00 UTC); details_hash as int8.
//
// The bytes are those pgx's CopyFrom sent for the same values, so
// PostgreSQL accepts and refuses the same rows as before: it checks the
// text's encoding, the JSON and the timestamps' range itself, and a refused
// row still fails the COPY with its SQLSTATE for the applier to bisect.

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	copyHeader = "PGCOPY\n\377\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00" // signature, flags, extension length
	copyFields = 11                                                     // columns per row, as in insertColumns
	// copyChunk is how much is encoded at a time: about what pgconn sends
	// in one CopyData message.
	copyChunk = 64 << 10
	// y2kMicros is the Unix time, in microseconds, of PostgreSQL's epoch.
	y2kMicros = 946_684_800_000_000
)

// copyInto copies rows into table (a name as SQL spells it) with COPY FROM
// STDIN in the binary format and returns how many rows PostgreSQL took.
func copyInto(ctx context.Context, conn *pgconn.PgConn, table string, rows []row) (int64, error) {
	tag, err := conn.CopyFrom(ctx, &copyReader{rows: rows}, sqlCopy(table))
	return tag.RowsAffected(), err
}

// copyReader is an io.Reader of rows in the binary COPY format, encoded a
// chunk at a time as the reader is read: no goroutine, nothing left running
// when the COPY stops early.
type copyReader struct {
	rows    []row // not yet encoded
	buf     []byte
	off     int // buf[off:] is not yet read
	started bool
	done    bool // the trailer is in buf
}

func (c *copyReader) Read(p []byte) (int, error) {
	for c.off == len(c.buf) {
		if c.done {
			return 0, io.EOF
		}
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}

// fill encodes the next rows, about copyChunk bytes of them, into buf.
func (c *copyReader) fill() error {
	b := c.buf[:0]
	if !c.started {
		b = append(b, copyHeader...)
		c.started = true
	}
	for len(c.rows) > 0 && len(b) < copyChunk {
		var err error
		if b, err = appendCopyRow(b, &c.rows[0]); err != nil {
			return err
		}
		c.rows = c.rows[1:]
	}
	if len(c.rows) == 0 {
		b = binary.BigEndian.AppendUint16(b, 0xffff) // int16 -1
		c.done = true
	}
	c.buf, c.off = b, 0
	return nil
}

func appendCopyRow(b []byte, r *row) ([]byte, error) {
	in := r.In
	// A field over PostgreSQL's 1 GB limit cannot arrive (gRPC's message
	// limits are far lower), but its length must not wrap into a valid one.
	if n := max(len(in.AccountId), len(in.Asset), len(in.Kind), len(in.Subject), len(r.Severity),
		len(in.Details), len(in.ScanId), len(in.Checker)); n >= math.MaxInt32 {
		return nil, fmt.Errorf("primary: copy: a field of %d bytes", n)
	}
	b = binary.BigEndian.AppendUint16(b, copyFields)
	for _, s := range [...]string{in.AccountId, in.Asset, in.Kind, in.Subject, r.Severity} {
		b = appendCopyText(b, s)
	}
	if in.Details == nil {
		b = binary.BigEndian.AppendUint32(b, math.MaxUint32) // int32 -1: NULL
	} else {
		b = binary.BigEndian.AppendUint32(b, uint32(1+len(in.Details)))
		b = append(b, 1) // jsonb's binary format version
		b = append(b, in.Details...)
	}
	b = appendCopyText(b, in.ScanId)
	b = appendCopyText(b, in.Checker)
	b = appendCopyInt64(b, r.FirstSeen-y2kMicros) // wraps as pgx's encoding did
	b = appendCopyInt64(b, in.ObservedAtUnixMicros-y2kMicros)
	b = appendCopyInt64(b, r.Hash)
	return b, nil
}

func appendCopyText(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendCopyInt64(b []byte, v int64) []byte {
	b = binary.BigEndian.AppendUint32(b, 8)
	return binary.BigEndian.AppendUint64(b, uint64(v))
}
