package primary

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// MaxInFlight is how many batches a stream may have received but not
	// yet applied; beyond it the server stops reading from the stream (flow
	// control holds the edge back). Default 8.
	MaxInFlight int
	// Parallel is how many of a stream's batches are written at once, each
	// in its own transaction on its own connection; they still commit, and
	// are acknowledged, in the order they were sent (see turn). One edge's
	// backlog then drains with that many of PostgreSQL's backends rather
	// than one. 1 applies them one after another. At most MaxInFlight.
	// Default 2.
	Parallel int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the server's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Server is the primary's gRPC Shipper service: one stream per edge,
// batches committed in the order they arrive (up to Parallel of them
// written at once) and acknowledged in that order.
type Server struct {
	longhaulv1.UnimplementedShipperServer

	applier *Applier
	cfg     ServerConfig
	log     *slog.Logger
	streams prometheus.Gauge

	drainOnce sync.Once
	draining  chan struct{}
}

// NewServer returns a Shipper service applying batches with a.
func NewServer(a *Applier, cfg ServerConfig) (*Server, error) {
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 8
	}
	if cfg.MaxInFlight < 1 {
		return nil, fmt.Errorf("primary: MaxInFlight must be at least 1, got %d", cfg.MaxInFlight)
	}
	if cfg.Parallel == 0 {
		cfg.Parallel = min(2, cfg.MaxInFlight)
	}
	if cfg.Parallel < 1 || cfg.Parallel > cfg.MaxInFlight {
		return nil, fmt.Errorf("primary: Parallel must be in [1, MaxInFlight %d], got %d", cfg.MaxInFlight, cfg.Parallel)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{applier: a, cfg: cfg, log: cfg.Logger, draining: make(chan struct{}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "longhaul_primary_streams", Help: "Open shipping streams from edges."})}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.streams); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Drain makes every stream stop taking batches: each finishes the batches
// it is applying, acknowledges them, and ends with UNAVAILABLE, so the edges
// reconnect (to this primary once it is back) and resend what was not
// acknowledged. Call it before grpc.Server.GracefulStop. Safe to call twice.
func (s *Server) Drain() { s.drainOnce.Do(func() { close(s.draining) }) }

var errDraining = status.Error(codes.Unavailable, "primary is shutting down")

// Ship serves one edge's stream.
func (s *Server) Ship(stream longhaulv1.Shipper_ShipServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil || hello.EdgeId == "" {
		return status.Error(codes.InvalidArgument, "ship: the first message must be a hello with edge_id")
	}
	applied, err := s.applier.AppliedSeq(ctx, hello.EdgeId)
	if err != nil {
		return status.Errorf(codes.Unavailable, "ship: %v", err)
	}
	if err := stream.Send(&longhaulv1.ShipResponse{Kind: &longhaulv1.ShipResponse_Welcome{Welcome: &longhaulv1.Welcome{AppliedSeq: applied}}}); err != nil {
		return err
	}
	s.streams.Inc()
	defer s.streams.Dec()
	log := s.log.With("edge", hello.EdgeId, "region", hello.Region)
	log.Info("ship: edge connected", "applied_seq", applied)

	// The reader runs ahead of the applier by up to MaxInFlight batches, so
	// decoding and collapsing the next batch overlaps PostgreSQL's applying
	// this one.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type received struct {
		b *longhaulv1.Batch
		p prepared
	}
	batches := make(chan received, s.cfg.MaxInFlight-1)
	readErr := make(chan error, 1)
	// The reader ends when Recv fails, which it does once Ship returns. It
	// reports why in readErr (once) before closing batches.
	go func() {
		defer close(batches)
		for {
			m, err := stream.Recv()
			if err != nil {
				readErr <- err
				return
			}
			b := m.GetBatch()
			if b == nil {
				readErr <- status.Error(codes.InvalidArgument, "ship: expected a batch")
				return
			}
			select {
			case batches <- received{b: b, p: prepare(b.Insights, b.Tallies)}:
			case <-ctx.Done():
				readErr <- ctx.Err()
				return
			}
		}
	}()

	// Batches being applied, acknowledged in this order as they finish.
	type job struct {
		b *longhaulv1.Batch
		t *turn
	}
	var (
		pending  []job
		last     *turn
		wg       sync.WaitGroup
		eof      bool
		draining = s.draining
	)
	// Returning cancels the batches still being applied; wait for them.
	defer wg.Wait()
	defer cancel()
	start := func(r received) {
		// The resolution a completion brings updates rows of its asset that
		// a batch behind it may be writing: that batch waits for it rather
		// than deadlock with it (which PostgreSQL would break, but after a
		// second). A batch is done only once those before it are.
		for i := len(pending) - 1; i >= 0; i-- {
			if j := pending[i]; !j.t.finished() && mayResolve(j.b.Completions, r.b.Insights) {
				<-j.t.done
				break
			}
		}
		var t, chained *turn // chained nil: applied alone, one after another
		if s.cfg.Parallel == 1 {
			t = newTurn(nil)
		} else {
			t = newTurn(last)
			last, chained = t, t
		}
		pending = append(pending, job{b: r.b, t: t})
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.finish(s.applier.apply(ctx, r.b, &r.p, chained))
		}()
		if chained == nil {
			<-t.done // one after another
		}
	}
	for {
		for len(pending) > 0 && pending[0].t.finished() {
			j := pending[0]
			pending = pending[1:]
			if err := s.ack(ctx, stream, log, j.b, j.t.res, j.t.err); err != nil {
				return err
			}
		}
		select {
		case <-draining:
			draining = nil // before any batch that is ready: take no more
		default:
		}
		var head <-chan struct{}
		if len(pending) > 0 {
			head = pending[0].t.done
		}
		var next <-chan received
		if !eof && draining != nil && len(pending) < s.cfg.Parallel {
			next = batches
		}
		if head == nil {
			switch {
			case draining == nil:
				return errDraining
			case eof:
				err := <-readErr
				if errors.Is(err, io.EOF) {
					log.Info("ship: edge closed the stream")
					return nil
				}
				return err
			}
		}
		select {
		case <-draining:
			draining = nil // take no more batches; acknowledge those under way
		case <-head:
		case r, ok := <-next:
			if !ok {
				eof = true
				continue
			}
			if r.b.EdgeId == "" {
				r.b.EdgeId = hello.EdgeId
			}
			if r.b.EdgeId != hello.EdgeId {
				return status.Errorf(codes.InvalidArgument, "ship: batch edge_id %q on the stream of %q", r.b.EdgeId, hello.EdgeId)
			}
			start(r)
		}
	}
}

// ack acknowledges one applied batch on the stream, or ends the stream with
// its error.
func (s *Server) ack(ctx context.Context, stream longhaulv1.Shipper_ShipServer, log *slog.Logger, b *longhaulv1.Batch, res Result, err error) error {
	if err != nil {
		if errors.Is(err, ErrInvalidBatch) {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		log.Warn("ship: apply failed; the edge will resend", "first_seq", b.FirstSeq, "last_seq", b.LastSeq, "err", err)
		return status.Errorf(codes.Unavailable, "ship: apply %d..%d: %v", b.FirstSeq, b.LastSeq, err)
	}
	ack := &longhaulv1.Ack{FirstSeq: b.FirstSeq, LastSeq: b.LastSeq, Status: res.Status, AppliedSeq: res.AppliedSeq,
		Rows: int64(res.Rows), DeadLetters: int64(res.DeadLetters), ApplyTime: durationpb.New(res.Duration)}
	if err := stream.Send(&longhaulv1.ShipResponse{Kind: &longhaulv1.ShipResponse_Ack{Ack: ack}}); err != nil {
		return err
	}
	if res.Status == longhaulv1.Ack_OUT_OF_SEQUENCE {
		log.Warn("ship: batch out of sequence; the edge resumes after the applied sequence",
			"first_seq", b.FirstSeq, "applied_seq", res.AppliedSeq)
	}
	return nil
}

// mayResolve tells whether completions may resolve insights of the same
// account, asset and checker as some of ins.
func mayResolve(completions []*longhaulv1.ScanCompletion, ins []*longhaulv1.BatchInsight) bool {
	if len(completions) == 0 || len(ins) == 0 {
		return false
	}
	type target struct{ account, asset, checker string }
	set := make(map[target]bool, len(completions))
	for _, c := range completions {
		set[target{c.AccountId, c.Asset, c.Checker}] = true
	}
	for _, in := range ins {
		if set[target{in.AccountId, in.Asset, in.Checker}] {
			return true
		}
	}
	return false
}
