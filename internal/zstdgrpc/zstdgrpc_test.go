package zstdgrpc

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"go.uber.org/goleak"
	"google.golang.org/grpc/encoding"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func codec(tb testing.TB) encoding.Compressor {
	c := encoding.GetCompressor(Name)
	if c == nil {
		tb.Fatalf("no compressor %q registered", Name)
	}
	return c
}

func compress(tb testing.TB, c encoding.Compressor, p []byte) []byte {
	var buf bytes.Buffer
	w, err := c.Compress(&buf)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Write(p); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// decompress reads as gRPC does: at most limit bytes, then Close.
func decompress(c encoding.Compressor, p []byte, limit int64) ([]byte, error) {
	r, err := c.Decompress(bytes.NewReader(p))
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(io.LimitReader(r, limit))
	if cl, ok := r.(io.Closer); ok {
		_ = cl.Close()
	}
	return out, err
}

// batchLike is text shaped like a shipping batch: repeated keys, JSON
// details, a random serial in each.
func batchLike(n int) []byte {
	var b bytes.Buffer
	noise := make([]byte, 30)
	for i := range n {
		_, _ = rand.Read(noise)
		fmt.Fprintf(&b, "account-%d host-%d.example.com tls.certificate-expiry port-%d {\"issuer\":\"CN=Example CA %d\",\"serial\":\"%x\",\"days_left\":%d}\n",
			i%500, i/20, i%20, i%7, noise, i%90)
	}
	return b.Bytes()
}

func TestRoundTrip(t *testing.T) {
	c := codec(t)
	random := make([]byte, 1<<20)
	_, _ = rand.Read(random)
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"one byte", []byte{0}},
		{"batch-like, 3 MB", batchLike(20_000)},
		{"random, 1 MiB", random},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Twice: the second round takes the pooled encoder and decoder.
			for range 2 {
				z := compress(t, c, tc.in)
				out, err := decompress(c, z, int64(len(tc.in))+1)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out, tc.in) {
					t.Fatalf("round trip changed %d bytes into %d", len(tc.in), len(out))
				}
			}
		})
	}
}

// TestConcurrent shares the pools among goroutines, as a primary's streams
// do (-race checks it).
func TestConcurrent(t *testing.T) {
	c := codec(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				in := batchLike(50 + g*10 + i)
				out, err := decompress(c, compress(t, c, in), 1<<30)
				if err != nil || !bytes.Equal(out, in) {
					t.Errorf("goroutine %d, round %d: %v, equal %v", g, i, err, bytes.Equal(out, in))
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestDecoderSurvivesBadInput: after refusing garbage, a truncated frame
// and an over-large window, the pooled decoders still decode.
func TestDecoderSurvivesBadInput(t *testing.T) {
	c := codec(t)
	good := batchLike(1000)
	z := compress(t, c, good)
	big, err := zstd.NewWriter(nil, zstd.WithWindowSize(64<<20), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	var wide bytes.Buffer
	big.Reset(&wide)
	_, _ = big.Write(bytes.Repeat(batchLike(200), 2000)) // > MaxWindow, so the frame declares a large window
	_ = big.Close()
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"garbage", []byte("this is not zstd at all")},
		{"truncated frame", z[:len(z)/2]},
		{"window over MaxWindow", wide.Bytes()},
	} {
		if _, err := decompress(c, tc.in, 1<<30); err == nil {
			t.Errorf("%s: decoded without an error", tc.name)
		}
		out, err := decompress(c, z, 1<<30)
		if err != nil || !bytes.Equal(out, good) {
			t.Fatalf("after %s: %v", tc.name, err)
		}
	}
}

// FuzzDecompress: any bytes from a peer give data or an error, never a
// panic, and never more than gRPC's limit read.
func FuzzDecompress(f *testing.F) {
	c := codec(f)
	f.Add([]byte{})
	f.Add(compress(f, c, []byte("hello")))
	f.Add(compress(f, c, batchLike(100)))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, _ := decompress(c, in, 1<<20)
		if len(out) > 1<<20 {
			t.Fatalf("read %d bytes past the limit", len(out))
		}
	})
}

// BenchmarkCodecs compares this compressor with gRPC's gzip at the level
// the edge used before (BestSpeed) on batch-like data: MB/s, and the
// compressed size as a share of the input.
func BenchmarkCodecs(b *testing.B) {
	if err := grpcgzip.SetLevel(gzip.BestSpeed); err != nil {
		b.Fatal(err)
	}
	in := batchLike(30_000)
	for _, name := range []string{Name, grpcgzip.Name} {
		c := encoding.GetCompressor(name)
		z := compress(b, c, in)
		b.Run(name+"/compress", func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				compress(b, c, in)
			}
			b.ReportMetric(float64(len(z))/float64(len(in)), "size-ratio")
		})
		b.Run(name+"/decompress", func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if _, err := decompress(c, z, 1<<30); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
