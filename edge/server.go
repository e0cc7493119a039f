package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/wire"
	"github.com/longhaul/longhaul/wal"
)

// RetryAfterFull is the retry hint a checker gets when the WAL is full.
const RetryAfterFull = 5 * time.Second

// Server implements the Ingest service: validate, append to the WAL (an OK
// answer means durable), answer with the sequence range.
type Server struct {
	longhaulv1.UnimplementedIngestServer

	log     *wal.Log
	limits  Limits
	logger  *slog.Logger
	metrics *serverMetrics
	now     func() time.Time
	// stages receives the validation, wal_sync and ack measurements for
	// the budget; nil when the server runs without an edge.
	stages *stageSet
	// access holds the per-client rate limit and is what authenticated
	// the requests (Service.Start sets it, see secure); nil: no limit, and
	// every client may write every account.
	access *access

	// closing refuses new pushes during shutdown; pushes holds those
	// under way, so shutdown can wait for them.
	mu      sync.RWMutex
	closing bool
	pushes  sync.WaitGroup
}

type serverMetrics struct {
	requests   *prometheus.CounterVec   // by method and code
	insights   prometheus.Counter       // accepted
	invalid    prometheus.Counter       // requests refused as invalid
	full       prometheus.Counter       // requests refused: WAL full
	refused    *prometheus.CounterVec   // requests refused for who sent them, by reason
	validation prometheus.Histogram     // seconds per request
	walSync    prometheus.Histogram     // seconds per append (fsync included)
	ack        *prometheus.HistogramVec // seconds from request to answer, by method
}

func newServerMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	buckets := prometheus.ExponentialBuckets(0.0001, 2, 16)
	m := &serverMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "longhaul_edge_requests_total",
			Help: "Ingest requests, by method and gRPC code."}, []string{"method", "code"}),
		insights: prometheus.NewCounter(prometheus.CounterOpts{Name: "longhaul_edge_insights_accepted_total",
			Help: "Insights accepted (durable in the WAL)."}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{Name: "longhaul_edge_requests_invalid_total",
			Help: "Requests refused as invalid (nothing written)."}),
		full: prometheus.NewCounter(prometheus.CounterOpts{Name: "longhaul_edge_requests_full_total",
			Help: "Requests refused because the WAL reached its quota."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "longhaul_edge_requests_refused_total",
			Help: "Ingest requests refused for who sent them (nothing written), by reason: unauthenticated, permission_denied " +
				"(a token scoped to other accounts), rate_limited (the client is over its rate of insights)."}, []string{"reason"}),
		validation: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "longhaul_edge_validation_seconds",
			Help: "Time to validate one request.", Buckets: buckets}),
		walSync: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "longhaul_edge_wal_append_seconds",
			Help: "Time to append one request to the WAL, fsync included.", Buckets: buckets}),
		ack: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "longhaul_edge_ack_seconds",
			Help: "Time from a request's arrival to its acknowledgement.", Buckets: buckets}, []string{"method"}),
	}
	if reg != nil {
		for _, r := range []string{refusedUnauthenticated, refusedPermissionDenied, refusedRateLimited} {
			m.refused.WithLabelValues(r)
		}
		for _, c := range []prometheus.Collector{m.requests, m.insights, m.invalid, m.full, m.refused, m.validation, m.walSync, m.ack} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// NewServer returns an Ingest service writing to log.
func NewServer(log *wal.Log, limits Limits, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	return newServer(log, limits, logger, reg, nil)
}

// newServer is NewServer measuring the budget's stages into stages.
func newServer(log *wal.Log, limits Limits, logger *slog.Logger, reg prometheus.Registerer, stages *stageSet) (*Server, error) {
	m, err := newServerMetrics(reg)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Server{log: log, limits: limits.withDefaults(), logger: logger, metrics: m, now: time.Now, stages: stages}, nil
}

var errShuttingDown = status.Error(codes.Unavailable, "edge is shutting down")

// begin registers a push under way; false once the server is closing.
func (s *Server) begin() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closing {
		return false
	}
	s.pushes.Add(1)
	return true
}

// Close refuses new pushes and waits for those under way to be answered.
func (s *Server) Close() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.pushes.Wait()
}

// Push accepts all of a request's insights or none.
func (s *Server) Push(ctx context.Context, req *longhaulv1.PushRequest) (*longhaulv1.PushResponse, error) {
	start := time.Now()
	resp, err := s.push(ctx, req)
	s.done("Push", start, err)
	return resp, err
}

func (s *Server) push(ctx context.Context, req *longhaulv1.PushRequest) (*longhaulv1.PushResponse, error) {
	if !s.begin() {
		return nil, errShuttingDown
	}
	defer s.pushes.Done()
	first, last, err := s.accept(ctx, req.Insights)
	if err != nil {
		return nil, err
	}
	return &longhaulv1.PushResponse{FirstSeq: first, LastSeq: last, Accepted: int64(len(req.Insights))}, nil
}

// PushStream accepts each request of the stream whole; the answer covers
// the stream. An error ends the stream: the requests before it were
// accepted (and durable), the one that failed and those after were not.
// The error of a request keeps its code and details, and says in its
// ErrorInfo how many insights were accepted, under which sequence numbers
// (MetaAccepted).
func (s *Server) PushStream(stream longhaulv1.Ingest_PushStreamServer) error {
	start := time.Now()
	err := s.pushStream(stream)
	s.done("PushStream", start, err)
	return err
}

func (s *Server) pushStream(stream longhaulv1.Ingest_PushStreamServer) error {
	if !s.begin() {
		return errShuttingDown
	}
	defer s.pushes.Done()
	ctx := stream.Context()
	// The answer waits for the checker to close the stream: what the edge
	// owes each request is its being durable. From the second request on,
	// the requests are made durable in order by an appender beside this
	// loop, so that while one request's records wait for their fsync the
	// next is read, validated and encoded; a stream of one request (a
	// small scan) is spared the goroutine. resp is the appender's while it
	// runs.
	resp := &longhaulv1.PushResponse{}
	record := func(ctx context.Context, payloads [][]byte, received time.Time) error {
		first, last, err := s.commit(ctx, payloads)
		if err != nil {
			return err
		}
		s.stages.observe(stageAck, time.Since(received), 1)
		if resp.FirstSeq == 0 {
			resp.FirstSeq = first
		}
		resp.LastSeq = last
		resp.Accepted += int64(len(payloads))
		return nil
	}
	type group struct {
		payloads [][]byte
		received time.Time
	}
	// All nil until the appender starts.
	var (
		groups   chan group
		failed   chan struct{}
		appended chan error
	)
	startAppender := func() {
		groups, failed, appended = make(chan group, 1), make(chan struct{}), make(chan error, 1)
		// A request read whole is made durable even if the stream
		// breaks after it, as it would have been before the next was
		// read.
		actx := context.WithoutCancel(ctx)
		go func() {
			var err error
			for g := range groups {
				if err != nil {
					continue // requests after a failed one are not accepted
				}
				if err = record(actx, g.payloads, g.received); err != nil {
					close(failed)
				}
			}
			appended <- err
		}()
	}
	// finish waits for the appender; its error, about an earlier request,
	// comes before err, about this one.
	finish := func(err error) error {
		if groups != nil {
			close(groups)
			if aerr := <-appended; aerr != nil {
				err = aerr
			}
		}
		if err != nil {
			return partiallyAccepted(err, resp)
		}
		return stream.SendAndClose(resp)
	}
	for n := 0; ; n++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return finish(nil)
		}
		if err != nil {
			// gRPC has answered the stream itself (a message over
			// MaxRequestBytes, a broken stream): what is returned here
			// reaches only the metrics.
			_ = finish(err)
			return err
		}
		received := time.Now()
		payloads, err := s.prepare(ctx, req.Insights)
		if err != nil {
			return finish(err)
		}
		if n == 0 {
			if err := record(ctx, payloads, received); err != nil {
				return finish(err)
			}
			continue
		}
		if groups == nil {
			startAppender()
		}
		select {
		case groups <- group{payloads: payloads, received: received}:
		case <-failed:
			return finish(nil)
		}
	}
}

// CompleteScan records the end of a scan.
func (s *Server) CompleteScan(ctx context.Context, req *longhaulv1.CompleteScanRequest) (*longhaulv1.CompleteScanResponse, error) {
	start := time.Now()
	resp, err := s.completeScan(ctx, req)
	s.done("CompleteScan", start, err)
	return resp, err
}

func (s *Server) completeScan(ctx context.Context, req *longhaulv1.CompleteScanRequest) (*longhaulv1.CompleteScanResponse, error) {
	if !s.begin() {
		return nil, errShuttingDown
	}
	defer s.pushes.Done()
	if err := s.admit(ctx, 1); err != nil {
		return nil, err
	}
	if req.Completion == nil {
		s.metrics.invalid.Inc()
		return nil, (&FieldError{Index: -1, Field: "completion", Reason: "is required"}).GRPCStatus().Err()
	}
	c, err := ValidateCompletion(s.now(), s.limits, req.Completion)
	if err != nil {
		s.metrics.invalid.Inc()
		return nil, err
	}
	if err := s.permitted(ctx, 1, func(int) string { return c.GetAccountId() }, func(int) string { return "completion.account_id" }); err != nil {
		return nil, err
	}
	payload, err := EncodeCompletion(c)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode completion: %v", err)
	}
	_, last, err := s.append(ctx, [][]byte{payload})
	if err != nil {
		return nil, err
	}
	return &longhaulv1.CompleteScanResponse{Seq: last}, nil
}

// accept takes insights out of the client's rate, validates them, checks
// the client may write their accounts, and appends them to the WAL as one
// group.
func (s *Server) accept(ctx context.Context, ins []*longhaulv1.Insight) (first, last uint64, err error) {
	payloads, err := s.prepare(ctx, ins)
	if err != nil {
		return 0, 0, err
	}
	return s.commit(ctx, payloads)
}

// prepare is accept up to the WAL: it returns the insights' records.
func (s *Server) prepare(ctx context.Context, ins []*longhaulv1.Insight) ([][]byte, error) {
	if err := s.admit(ctx, len(ins)); err != nil {
		return nil, err
	}
	t := time.Now()
	valid, err := ValidateInsights(s.now(), s.limits, ins)
	took := time.Since(t)
	s.metrics.validation.Observe(took.Seconds())
	s.stages.observe(stageValidation, took, 1)
	if err != nil {
		s.metrics.invalid.Inc()
		return nil, err
	}
	if err := s.permitted(ctx, len(ins), func(i int) string { return ins[i].GetAccountId() },
		func(i int) string { return fmt.Sprintf("insights[%d].account_id", i) }); err != nil {
		return nil, err
	}
	// The records share one buffer: the WAL copies them.
	size := 0
	for _, in := range valid {
		size += wire.InsightRecordSize(in)
	}
	buf := make([]byte, 0, size)
	payloads := make([][]byte, len(valid))
	for i, in := range valid {
		start := len(buf)
		buf = wire.AppendInsightRecord(buf, in)
		payloads[i] = buf[start:len(buf):len(buf)]
	}
	return payloads, nil
}

// commit appends one request's records to the WAL as one group.
func (s *Server) commit(ctx context.Context, payloads [][]byte) (first, last uint64, err error) {
	first, last, err = s.append(ctx, payloads)
	if err == nil {
		s.metrics.insights.Add(float64(len(payloads)))
	}
	return first, last, err
}

func (s *Server) append(ctx context.Context, payloads [][]byte) (first, last uint64, err error) {
	t := time.Now()
	first, last, err = s.log.Append(ctx, payloads)
	took := time.Since(t)
	s.metrics.walSync.Observe(took.Seconds())
	if err == nil {
		s.stages.observe(stageWALSync, took, 1)
	}
	switch {
	case err == nil:
		return first, last, nil
	case errors.Is(err, wal.ErrFull):
		s.metrics.full.Inc()
		return 0, 0, errWALFull()
	case ctx.Err() != nil:
		return 0, 0, status.FromContextError(ctx.Err()).Err()
	}
	s.logger.Error("edge: WAL append failed; refusing writes", "err", err)
	return 0, 0, status.Error(codes.Unavailable, fmt.Sprintf("edge: cannot write: %v", err))
}

func (s *Server) done(method string, start time.Time, err error) {
	code := status.Code(err)
	s.metrics.requests.WithLabelValues(method, code.String()).Inc()
	if err == nil {
		took := time.Since(start)
		s.metrics.ack.WithLabelValues(method).Observe(took.Seconds())
		if method != "PushStream" {
			s.stages.observe(stageAck, took, 1)
		}
	}
}
