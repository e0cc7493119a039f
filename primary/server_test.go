package primary

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/pgtest"
)

func startService(t testing.TB, cfgs ...ServerConfig) *Service {
	t.Helper()
	cfg := Config{
		DatabaseURL: pgtest.URL(t), Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler),
	}
	for _, c := range cfgs {
		cfg.Server = c
	}
	svc, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	return svc
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// open opens a shipping stream as edge and returns it with the welcome.
func open(ctx context.Context, t testing.TB, cc *grpc.ClientConn, edge string) (longhaulv1.Shipper_ShipClient, uint64) {
	t.Helper()
	stream, err := longhaulv1.NewShipperClient(cc).Ship(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&longhaulv1.ShipRequest{Kind: &longhaulv1.ShipRequest_Hello{Hello: &longhaulv1.Hello{EdgeId: edge}}}); err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.GetWelcome() == nil {
		t.Fatalf("first answer %v, want a welcome", m)
	}
	return stream, m.GetWelcome().AppliedSeq
}

func sendBatch(t testing.TB, stream longhaulv1.Shipper_ShipClient, b *longhaulv1.Batch) {
	t.Helper()
	if err := stream.Send(&longhaulv1.ShipRequest{Kind: &longhaulv1.ShipRequest_Batch{Batch: b}}); err != nil {
		t.Fatal(err)
	}
}

func TestShipStreamAppliesInOrderWithSeveralInFlight(t *testing.T) {
	t.Parallel()
	svc := startService(t)
	cc := dial(t, svc.Addr())
	ctx := context.Background()
	stream, applied := open(ctx, t, cc, "edge-a")
	if applied != 0 {
		t.Fatalf("welcome applied_seq = %d for a new edge", applied)
	}
	// Five batches sent before any ack comes back.
	for i := range 5 {
		seq := uint64(i*10 + 1)
		b := &longhaulv1.Batch{FirstSeq: seq, LastSeq: seq + 9, Insights: Synthetic(100, i*100, 200, time.Now(), "scan-1")}
		sendBatch(t, stream, b)
	}
	for i := range 5 {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		ack := m.GetAck()
		if ack == nil || ack.Status != longhaulv1.Ack_APPLIED || ack.FirstSeq != uint64(i*10+1) || ack.AppliedSeq != uint64(i*10+10) || ack.Rows != 100 {
			t.Fatalf("ack %d = %v", i, m)
		}
		if ack.ApplyTime.AsDuration() <= 0 {
			t.Errorf("ack %d carries no apply time", i)
		}
	}
	// The batch again (a lost ack): acknowledged as a duplicate.
	sendBatch(t, stream, &longhaulv1.Batch{FirstSeq: 41, LastSeq: 50, Insights: Synthetic(100, 400, 200, time.Now(), "scan-1")})
	if m, err := stream.Recv(); err != nil || m.GetAck().GetStatus() != longhaulv1.Ack_DUPLICATE {
		t.Fatalf("replayed batch: %v, %v", m, err)
	}
	// A batch of another edge on this stream is refused.
	sendBatch(t, stream, &longhaulv1.Batch{EdgeId: "edge-b", FirstSeq: 1, LastSeq: 1})
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("foreign batch: %v, want InvalidArgument", err)
	}
	// A new stream resumes after what was applied.
	if _, applied := open(ctx, t, cc, "edge-a"); applied != 50 {
		t.Fatalf("welcome after reconnect: applied_seq %d, want 50", applied)
	}
}

// TestShipClientDisconnectsMidBatch: an edge that goes away while its batch
// is being applied leaves nothing half-applied; sending it again on a new
// stream applies it exactly once.
func TestShipClientDisconnectsMidBatch(t *testing.T) {
	t.Parallel()
	svc := startService(t)
	cc := dial(t, svc.Addr())
	const rows = 50000
	ins := Synthetic(rows, 0, 200, time.Now(), "scan-big")
	count := func() (n, batches, applied int) {
		err := svc.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM insights),
			(SELECT coalesce(sum(batches), 0) FROM edge_ledger), (SELECT coalesce(sum(applied_count), 0) FROM scans)`).Scan(&n, &batches, &applied)
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithCancel(context.Background())
		stream, applied := open(ctx, t, cc, "edge-big")
		if applied == 1 {
			cancel()
			break
		}
		if attempt > 5 {
			// Cut the stream several times; now let one through.
			sendBatch(t, stream, &longhaulv1.Batch{FirstSeq: 1, LastSeq: 1, Insights: ins})
			m, err := stream.Recv()
			cancel()
			if err != nil || m.GetAck().GetStatus() != longhaulv1.Ack_APPLIED {
				t.Fatalf("final attempt: %v, %v", m, err)
			}
			break
		}
		sendBatch(t, stream, &longhaulv1.Batch{FirstSeq: 1, LastSeq: 1, Insights: ins})
		// Gone while the primary applies it.
		time.Sleep(time.Duration(attempt*20) * time.Millisecond)
		cancel()
		// Whatever happened, the table holds all of the batch or none of it.
		time.Sleep(200 * time.Millisecond)
		if n, _, _ := count(); n != 0 && n != rows {
			t.Fatalf("after a disconnect the table holds %d of %d rows", n, rows)
		}
	}
	n, batches, applied := count()
	if n != rows || batches != 1 || applied != rows {
		t.Fatalf("table %d rows, ledger %d batches, scan counted %d; want %d, 1, %d", n, batches, applied, rows, rows)
	}
}

func TestServiceEndpoints(t *testing.T) {
	t.Parallel()
	svc := startService(t)
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  `"database":"ok"`,
		"/metrics": "longhaul_primary_streams",
	} {
		resp, err := http.Get("http://" + svc.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d %q, want 200 with %q", path, resp.StatusCode, body, want)
		}
	}
	h, err := healthpb.NewHealthClient(dial(t, svc.Addr())).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "longhaul.v1.Shipper"})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health: %v, %v", h, err)
	}
}

// TestStopDrains: on Stop the batch being applied finishes and is
// acknowledged; the stream then ends with UNAVAILABLE.
func TestStopDrains(t *testing.T) {
	t.Parallel()
	svc := startService(t)
	stream, _ := open(context.Background(), t, dial(t, svc.Addr()), "edge-d")
	sendBatch(t, stream, &longhaulv1.Batch{FirstSeq: 1, LastSeq: 1, Insights: Synthetic(20000, 0, 200, time.Now(), "s")})
	time.Sleep(50 * time.Millisecond) // the apply is under way
	stopped := make(chan error, 1)
	go func() { stopped <- svc.Stop(context.Background()) }()
	m, err := stream.Recv()
	if err != nil {
		// The batch had not reached the applier: it must not be applied.
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("stream ended with %v, want UNAVAILABLE", err)
		}
	} else if m.GetAck().GetStatus() != longhaulv1.Ack_APPLIED {
		t.Fatalf("answer during drain: %v", m)
	} else if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("after the drain: %v, want UNAVAILABLE", err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}
