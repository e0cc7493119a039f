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
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the server's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Server is the primary's gRPC Shipper service: one stream per edge,
// batches applied in the order they arrive and acknowledged in that order.
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

// Drain makes every stream stop taking batches: each finishes the batch it
// is applying, acknowledges it, and ends with UNAVAILABLE, so the edges
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

	for {
		select {
		case <-s.draining:
			return errDraining
		default:
		}
		var r received
		select {
		case <-s.draining:
			return errDraining
		case r = <-batches:
		}
		b := r.b
		if b == nil {
			err := <-readErr
			if errors.Is(err, io.EOF) {
				log.Info("ship: edge closed the stream")
				return nil
			}
			return err
		}
		if b.EdgeId == "" {
			b.EdgeId = hello.EdgeId
		}
		if b.EdgeId != hello.EdgeId {
			return status.Errorf(codes.InvalidArgument, "ship: batch edge_id %q on the stream of %q", b.EdgeId, hello.EdgeId)
		}
		res, err := s.applier.apply(ctx, b, &r.p)
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
	}
}
