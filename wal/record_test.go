package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

func encodeRecordForTest(seq uint64, at int64, end uint64, payload []byte) (key, value []byte) {
	key = recordKey(seq)
	value = make([]byte, recordHeaderLen+len(payload))
	encodeRecordValue(value, key, at, end, payload)
	return key, value
}

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	for _, payload := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte{0xff}, 70000)} {
		key, value := encodeRecordForTest(42, at.UnixNano(), 1234, payload)
		r, end, err := decodeRecordEnd(key, value)
		if err != nil {
			t.Fatalf("decode(%d-byte payload): %v", len(payload), err)
		}
		if r.Seq != 42 || !r.AppendedAt.Equal(at) || !bytes.Equal(r.Payload, payload) || end != 1234 {
			t.Fatalf("decode = %+v, end %d", r, end)
		}
		if len(key)+len(value) != int(recordSize(len(payload))) {
			t.Fatalf("record of %d-byte payload takes %d bytes, recordSize says %d", len(payload), len(key)+len(value), recordSize(len(payload)))
		}
	}
}

// TestDecodeRecordRejects corrupts a valid record in each way the decoder
// must notice.
func TestDecodeRecordRejects(t *testing.T) {
	t.Parallel()
	key, value := encodeRecordForTest(7, 1, 2, []byte("payload"))
	clone := func(b []byte) []byte { return append([]byte(nil), b...) }
	for _, tc := range []struct {
		name       string
		key, value func() []byte
	}{
		{"empty key", func() []byte { return nil }, nil},
		{"short key", func() []byte { return key[:5] }, nil},
		{"wrong prefix", func() []byte { k := clone(key); k[0] = 'm'; return k }, nil},
		{"other sequence", func() []byte { return recordKey(8) }, nil},
		{"empty value", nil, func() []byte { return nil }},
		{"short header", nil, func() []byte { return value[:recordHeaderLen-1] }},
		{"unknown version", nil, func() []byte { v := clone(value); v[0] = 2; return v }},
		{"truncated payload", nil, func() []byte { return value[:len(value)-1] }},
		{"extra byte", nil, func() []byte { return append(clone(value), 0) }},
		{"huge length", nil, func() []byte { v := clone(value); binary.BigEndian.PutUint32(v[17:], 1<<31); return v }},
		{"flipped time", nil, func() []byte { v := clone(value); v[3] ^= 1; return v }},
		{"flipped end", nil, func() []byte { v := clone(value); v[12] ^= 1; return v }},
		{"flipped checksum", nil, func() []byte { v := clone(value); v[22] ^= 1; return v }},
		{"flipped payload", nil, func() []byte { v := clone(value); v[len(v)-1] ^= 0x80; return v }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, v := key, value
			if tc.key != nil {
				k = tc.key()
			}
			if tc.value != nil {
				v = tc.value()
			}
			if _, err := decodeRecord(k, v); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeRecord = %v, want ErrCorrupt", err)
			}
		})
	}
	// Every single-bit flip of the value is caught.
	for i := range len(value) * 8 {
		v := append([]byte(nil), value...)
		v[i/8] ^= 1 << (i % 8)
		if _, err := decodeRecord(key, v); err == nil {
			t.Fatalf("bit %d flipped: decodeRecord accepted it", i)
		}
	}
}

func TestMetaRoundTrip(t *testing.T) {
	t.Parallel()
	m := meta{truncatedSeq: 1 << 40, truncatedEnd: 12345}
	v := encodeMeta(m)
	got, err := decodeMeta(v)
	if err != nil || got != m {
		t.Fatalf("decodeMeta = %+v, %v", got, err)
	}
	for i := range len(v) * 8 {
		c := append([]byte(nil), v...)
		c[i/8] ^= 1 << (i % 8)
		if _, err := decodeMeta(c); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bit %d flipped: decodeMeta = %v", i, err)
		}
	}
	if _, err := decodeMeta(v[:len(v)-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short meta: %v", err)
	}
}

// FuzzDecodeRecord checks that the decoder never panics on any key and value,
// and that whatever it accepts encodes back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	for _, p := range [][]byte{nil, []byte("x"), []byte(`{"severity":"high"}`), bytes.Repeat([]byte{0}, 300)} {
		k, v := encodeRecordForTest(1, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(), 99, p)
		f.Add(k, v)
		f.Add(k, v[:len(v)-1])
	}
	k, v := encodeRecordForTest(1<<63, -1, 1<<64-1, []byte("edge"))
	f.Add(k, v)
	f.Add([]byte{}, []byte{})
	f.Add([]byte("r"), []byte{1})

	f.Fuzz(func(t *testing.T, key, value []byte) {
		r, end, err := decodeRecordEnd(key, value)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		k2, v2 := encodeRecordForTest(r.Seq, r.AppendedAt.UnixNano(), end, r.Payload)
		if !bytes.Equal(k2, key) || !bytes.Equal(v2, value) {
			t.Fatalf("accepted record does not re-encode to its input:\nkey %x\n  → %x\nvalue %x\n  → %x", key, k2, value, v2)
		}
	})
}
