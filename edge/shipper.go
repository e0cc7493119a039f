package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/coalesce"
	"github.com/longhaul/longhaul/internal/wire"
	"github.com/longhaul/longhaul/internal/zstdgrpc"
	"github.com/longhaul/longhaul/wal"
)

// The shipper moves the WAL to the primary over one long-lived gRPC stream
// (longhaul.v1.Shipper/Ship, api/longhaul/v1/ship.proto):
//
//	edge                                         primary
//	  Hello{edge_id, region}            ──►
//	                                    ◄──  Welcome{applied_seq}
//	  truncate the WAL to applied_seq; resume at applied_seq+1
//	  Batch{first_seq..last_seq, …}     ──►  apply in one transaction with
//	  Batch{…}                          ──►  the ledger; in order
//	  … up to MaxInFlight unacknowledged
//	                                    ◄──  Ack{first..last, APPLIED, applied_seq}
//	  truncate the WAL to applied_seq
//
// A batch is a contiguous run of WAL sequence numbers, each batch starting
// right after the one before, and the primary applies a batch only if it
// starts right after its ledger. So the primary's applied sequence is always
// a prefix of the WAL, and everything the edge needs to know to resume is
// that one number, which every Welcome and Ack carries.
//
// Guarantees:
//
//   - At least once, applied once. A record leaves the WAL only after an Ack
//     (or Welcome) says the primary applied a range that covers it. Whatever
//     breaks (the link, the stream, the primary, the edge process), the next
//     stream resumes after the primary's applied sequence and sends again
//     what was not acknowledged; the primary's ledger makes a resent range a
//     DUPLICATE instead of a second write.
//   - Order. Batches are sent, applied and acknowledged in WAL order.
//   - Coalescing keeps the result. Within a batch only the winner of each
//     insight key under last-writer-wins (internal/coalesce) is sent, which is
//     what the primary would keep of the batch; the per-scan tallies are
//     counted before coalescing, so scan progress stays exact; and the
//     winner carries the key's earliest observation in the batch
//     (first_seen_unix_micros), so first_seen_at is what it would have been
//     without coalescing.
//   - No poison records. A WAL record that does not decode is logged,
//     counted (longhaul_edge_ship_bad_records_total) and skipped; the batch's
//     range still covers it, so it never blocks the records behind it.
//   - Throughput does not fall with the round-trip time while MaxInFlight
//     batches cover it, once the primary's HTTP/2 receive window lets them
//     through: gRPC opens that window from 64 KiB one round trip at a time
//     (BDP estimation) unless the server sets it (grpc.InitialWindowSize,
//     grpc.InitialConnWindowSize). At 150 ms that ramp costs about a second
//     per connection (BenchmarkShipRTT); the first batches of a stream are
//     smaller, so the primary starts applying during it.
//   - Never silent loss. When the primary's ledger cannot be a prefix of this
//     WAL (it is beyond every sequence the WAL ever held: the edge id was
//     reused with a wiped disk; or the WAL has truncated past it: the
//     primary lost acknowledged batches), Run stops with ErrLedgerMismatch
//     instead of shipping, and truncates nothing.

// ErrLedgerMismatch is returned by Run when the primary's applied sequence
// for this edge is beyond everything the WAL ever held, or behind what the
// WAL has already truncated. Shipping on would lose records silently, so the
// shipper stops; an operator must decide (a new edge id for a wiped disk, or
// a replay for a restored primary).
var ErrLedgerMismatch = errors.New("edge: the primary's ledger does not match the WAL")

// ShipperConfig configures a Shipper. Zero fields take the defaults given.
type ShipperConfig struct {
	// EdgeID names this edge's WAL in the primary's ledger. It must stay the
	// same across restarts of the edge, and be unique among edges. Required.
	EdgeID string
	// Region is reported to the primary in the Hello.
	Region string
	// Primary is the primary's gRPC address, host:port. Required.
	Primary string
	// DialOptions are added after the shipper's own (insecure transport,
	// keepalive, connection backoff, a stats handler), so they may replace
	// them: e.g. grpc.WithTransportCredentials for TLS.
	DialOptions []grpc.DialOption

	// MaxBatchBytes bounds the WAL payload bytes of one batch (a record
	// larger than it goes alone). Default 4 MiB.
	MaxBatchBytes int
	// MaxBatchRecords bounds the WAL records of one batch. Default 100,000.
	MaxBatchRecords int
	// MaxBatchAge is how long the oldest record of a batch that is not full
	// may wait for more records. Records already in the WAL never wait: a
	// backlog ships in full batches. With a Budget it caps the budget's
	// wait: raise it (up to Budget.VisibleP99) to let the budget alone
	// decide how large batches grow. Default 250ms.
	MaxBatchAge time.Duration
	// Budget, when its VisibleP99 is set, steers how long the oldest
	// record of a batch that is not full may wait (the edge sets it from
	// Config.Budget): as long as it can still be visible in the primary
	// within VisibleP99, given the batches' measured round trip and apply
	// time (p99 over the budget's window) and the budget's Margin:
	//
	//	wait = clamp(VisibleP99 − (round trip p99 + apply p99 + Margin), 0, MaxBatchAge)
	//
	// so batches grow as large as the budget allows, and ship at once when
	// the link is too slow for any wait. The round trip is never taken as
	// shorter than the oldest batch in flight has been waiting for its ack
	// (a link slowing down shows there before any ack measures it). While
	// the window holds no ack (a new stream, an idle edge), the round trip
	// and apply are taken as their budgeted shares (Budget.Shares), or as
	// the last round trip measured (at first: the hello's) if longer.
	// Zero fields other than VisibleP99 take the defaults of Budget. Zero:
	// no steering, MaxBatchAge alone.
	Budget Budget
	// FixedInterval, when set, replaces both: batches are sent at every
	// multiple of FixedInterval of the wall clock, with the records
	// appended before it (a fixed-interval flush, for comparison with the
	// budget's steering). The size caps still apply. Default 0: off.
	FixedInterval time.Duration
	// MaxInFlight is how many batches may be sent and not yet acknowledged,
	// so that throughput does not fall with the round-trip time. Default 8.
	MaxInFlight int
	// Compression of the stream: CompressionZstd (the default),
	// CompressionGzip, or CompressionNone. A primary that cannot decode
	// zstd (one older than this edge) refuses the stream; the shipper logs
	// it and reconnects with gzip. When that stream ends, the next asks
	// for zstd again (the primary may have been upgraded meanwhile).
	Compression string

	// BackoffMin and BackoffMax bound the wait before reconnecting after a
	// failure; it doubles after each failure without progress, with
	// jitter. Defaults 100ms and 10s.
	BackoffMin, BackoffMax time.Duration
	// ConnectTimeout bounds connecting and the Hello/Welcome exchange.
	// Default 10s.
	ConnectTimeout time.Duration
	// StallTimeout ends a stream on which nothing moved (no batch sent, no
	// ack received) for this long while the WAL holds records the primary
	// has not acknowledged, and opens a new one. Keepalive catches a dead
	// link; this catches a live one that stopped moving (a peer that
	// neither reads nor answers, or a hang of the shipper's own). Each
	// such end is logged with where the stream's sender and receiver were
	// and counted (longhaul_edge_ship_stalls_total). It must exceed the
	// longest apply of one batch. Default 60s; negative: never.
	StallTimeout time.Duration

	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the shipper's metrics; nil registers nothing.
	Registerer prometheus.Registerer

	// stages receives the shipper's measurements (queue_wait,
	// ship_round_trip, apply, end_to_end), which the steering reads. The
	// edge shares its own; when nil the shipper makes one, registered
	// with Registerer.
	stages *stageSet
}

// The stream's compressions. Zstandard at its fastest level
// (internal/zstdgrpc) takes about a third of gzip's CPU to compress a batch
// and a sixth to decompress it, to fewer bytes; the edge's CPU is what the
// checkers beside it wait for, the primary's what PostgreSQL beside it
// wants.
const (
	CompressionZstd = zstdgrpc.Name
	CompressionGzip = gzip.Name
	CompressionNone = "none"
)

// gzip, for primaries without zstd, at its fastest level: on the measured
// batches (JSON details, repeated keys) it keeps most of the default
// level's ratio at a fraction of its CPU. The level is process-wide (grpc
// registers one gzip compressor), hence init.
func init() {
	if err := gzip.SetLevel(1); err != nil { // gzip.BestSpeed
		panic(err)
	}
}

// Keepalive of the stream's connection: a dead link (a blackhole, a peer
// gone without a reset) is noticed within about shipKeepaliveTime +
// shipKeepaliveTimeout. gRPC does not ping more often than every 10s, and
// the primary refuses pings more often than every 5s.
const (
	shipKeepaliveTime    = 10 * time.Second
	shipKeepaliveTimeout = 5 * time.Second
)

func (c *ShipperConfig) setDefaults() {
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = 4 << 20
	}
	if c.MaxBatchRecords == 0 {
		c.MaxBatchRecords = 100_000
	}
	if c.Budget.VisibleP99 > 0 {
		c.Budget = c.Budget.withDefaults()
	}
	if c.MaxBatchAge == 0 {
		c.MaxBatchAge = 250 * time.Millisecond
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 8
	}
	if c.Compression == "" {
		c.Compression = CompressionZstd
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = 100 * time.Millisecond
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 10 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// shipFirstBatchBytes bounds the first batch of a stream; see send.
const shipFirstBatchBytes = 256 << 10

// shipMaxBatchBytes keeps a batch well inside the primary's 256 MiB
// message limit, whatever the protobuf overhead.
const shipMaxBatchBytes = 128 << 20

func (c *ShipperConfig) validate() error {
	var errs []error
	if c.EdgeID == "" {
		errs = append(errs, errors.New("an EdgeID is required"))
	}
	if c.Primary == "" {
		errs = append(errs, errors.New("a Primary address is required"))
	}
	if c.MaxBatchBytes < 1 || c.MaxBatchBytes > shipMaxBatchBytes {
		errs = append(errs, fmt.Errorf("MaxBatchBytes %d is outside [1, %d]", c.MaxBatchBytes, shipMaxBatchBytes))
	}
	if c.MaxBatchRecords < 1 {
		errs = append(errs, fmt.Errorf("MaxBatchRecords %d must be at least 1", c.MaxBatchRecords))
	}
	if c.MaxBatchAge < 0 {
		errs = append(errs, fmt.Errorf("MaxBatchAge %v is negative", c.MaxBatchAge))
	}
	if c.MaxInFlight < 1 {
		errs = append(errs, fmt.Errorf("MaxInFlight %d must be at least 1", c.MaxInFlight))
	}
	switch c.Compression {
	case CompressionZstd, CompressionGzip, CompressionNone:
	default:
		errs = append(errs, fmt.Errorf("the Compression %q is not one of %s, %s, %s", c.Compression, CompressionZstd, CompressionGzip, CompressionNone))
	}
	if c.FixedInterval < 0 {
		errs = append(errs, fmt.Errorf("FixedInterval %v is negative", c.FixedInterval))
	}
	if c.Budget.VisibleP99 < 0 {
		errs = append(errs, fmt.Errorf("Budget.VisibleP99 %v is negative", c.Budget.VisibleP99))
	} else if c.Budget.VisibleP99 > 0 {
		if err := c.Budget.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.BackoffMin < 0 || c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("backoff %v..%v is not a range of positive durations", c.BackoffMin, c.BackoffMax))
	}
	if c.ConnectTimeout < 0 {
		errs = append(errs, fmt.Errorf("ConnectTimeout %v is negative", c.ConnectTimeout))
	}
	if len(errs) > 0 {
		return fmt.Errorf("edge: invalid shipper config: %w", errors.Join(errs...))
	}
	return nil
}

// Shipper ships an edge's WAL to the primary; see Run.
type Shipper struct {
	log      *wal.Log
	cfg      ShipperConfig
	logger   *slog.Logger
	m        *shipMetrics
	dialOpts []grpc.DialOption
	running  atomic.Bool
	stages   *stageSet
	// lastShip is the last round trip measured, in nanoseconds: a batch's
	// send to its ack, or a hello's send to the welcome.
	lastShip atomic.Int64
	// compression is the next stream's compression: cfg.Compression, or
	// gzip after a primary refused zstd, until that gzip stream ends.
	compression atomic.Pointer[string]

	// cur is the current stream, nil between streams: Stats reads where
	// its sender and receiver are.
	cur atomic.Pointer[shipStream]

	mu    sync.Mutex
	stats ShipperStats
	// inFlight holds the send times of the current stream's batches in
	// flight, oldest first.
	inFlight []time.Time
}

// ShipperStats is a snapshot of a shipper's state and counters since
// NewShipper.
type ShipperStats struct {
	// Connected is true while a stream is up (the primary has welcomed it).
	Connected bool
	// AppliedSeq is the primary's applied sequence for this edge, as last
	// heard (Welcome or Ack); everything up to it is truncated from the WAL.
	AppliedSeq uint64
	// SentSeq is the last sequence sent on the current stream.
	SentSeq uint64
	// InFlight is the number of batches sent and not acknowledged;
	// PeakInFlight the most there ever were.
	InFlight, PeakInFlight int

	// Connects counts streams the primary welcomed; Reconnects the streams
	// (or attempts) that failed and were followed by a reconnect.
	Connects, Reconnects uint64

	// BatchesSent counts batches sent, resends included; RecordsSent the
	// WAL records they covered; PayloadBytes their encoded size, and
	// WireBytes what gRPC sent for them (compressed, with framing).
	BatchesSent, RecordsSent uint64
	PayloadBytes, WireBytes  uint64

	// Acks by status.
	Applied, Duplicates, OutOfSequence uint64

	// Counted once, when the batch holding them is APPLIED: WAL records,
	// insights read from them, insight rows sent for them (winners),
	// insights coalesced away (InsightsIn - InsightsOut), completions,
	// and records skipped because they do not decode.
	RecordsApplied, InsightsIn, InsightsOut, Coalesced, Completions, BadRecords uint64
	// Rows and DeadLetters as the primary reported them in its acks.
	Rows, DeadLetters uint64

	// LastBatchRecords and LastBatchBytes are the WAL records and payload
	// bytes of the last batch sent; TargetWait is how long the oldest
	// record of a batch that is not full was last allowed to wait.
	LastBatchRecords, LastBatchBytes int
	TargetWait                       time.Duration

	// Sender and Receiver say where the current stream's sender and
	// receiver are (see the phase constants): "" between streams.
	Sender, Receiver string
	// Stalls counts streams ended by StallTimeout.
	Stalls uint64
	// Compression is the compression of the next stream (see
	// ShipperConfig.Compression).
	Compression string

	// LedgerMismatch is set when the shipper stopped on ErrLedgerMismatch.
	LedgerMismatch bool
	// LastError is the error that ended the last stream, "" if none did.
	LastError string
}

// NewShipper returns a shipper of log's records to cfg.Primary. It does not
// connect; Run does. Close log only after Run has returned.
func NewShipper(log *wal.Log, cfg ShipperConfig) (*Shipper, error) {
	if log == nil {
		return nil, errors.New("edge: NewShipper: nil WAL")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Shipper{log: log, cfg: cfg, logger: cfg.Logger.With("edge_id", cfg.EdgeID), stages: cfg.stages}
	s.m = newShipMetrics(s)
	s.useCompression(cfg.Compression)
	if s.stages == nil {
		window := cfg.Budget.Window
		if window == 0 {
			window = DefaultWindow
		}
		s.stages = newStageSet(cfg.Region, window)
		s.m.all = append(s.m.all, s.stages)
	}
	if cfg.Registerer != nil {
		if err := s.m.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("edge: shipper metrics: %w", err)
		}
	}
	s.dialOpts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: shipKeepaliveTime, Timeout: shipKeepaliveTimeout, PermitWithoutStream: true,
		}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: cfg.BackoffMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.BackoffMax},
			MinConnectTimeout: cfg.ConnectTimeout,
		}),
		grpc.WithStatsHandler(shipWireCounter{s}),
	}, cfg.DialOptions...)
	// Catch a malformed address or option now rather than in every
	// reconnection.
	cc, err := grpc.NewClient(cfg.Primary, s.dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("edge: shipper: %w", err)
	}
	_ = cc.Close()
	return s, nil
}

// Stats returns a snapshot of the shipper's state and counters.
func (s *Shipper) Stats() ShipperStats {
	s.mu.Lock()
	st := s.stats
	s.mu.Unlock()
	if cur := s.cur.Load(); cur != nil {
		st.Sender, st.Receiver = cur.sendPhase.String(), cur.recvPhase.String()
	}
	st.Compression = *s.compression.Load()
	return st
}

// Run ships until ctx ends, then returns nil. Each stream lives as long as
// it can; when it fails (the primary is down or restarting, the link is
// cut, blackholed or reset, the primary answers UNAVAILABLE or
// OUT_OF_SEQUENCE), Run waits a backoff and opens a new one, on a new
// connection, resuming after the primary's applied sequence. It returns an
// error only when shipping on could lose data: ErrLedgerMismatch. Run must
// not be called again while it runs; no goroutine of it is left once it has
// returned.
func (s *Shipper) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("edge: shipper: Run is already running")
	}
	defer s.running.Store(false)
	attempt := 0
	for {
		start := time.Now()
		progress, err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrLedgerMismatch) {
			s.mu.Lock()
			s.stats.LedgerMismatch, s.stats.LastError = true, err.Error()
			s.mu.Unlock()
			s.m.ledgerMismatch.Set(1)
			s.logger.Error("ship: STOPPED SHIPPING: "+err.Error()+"; the WAL is kept as it is", "err", err)
			return err
		}
		if progress || time.Since(start) > s.cfg.BackoffMax {
			attempt = 0
		}
		wait := s.backoff(attempt)
		attempt++
		s.m.reconnects.Inc()
		s.mu.Lock()
		s.stats.Reconnects++
		s.stats.LastError = err.Error()
		s.mu.Unlock()
		s.logger.Warn("ship: stream ended; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff is the wait before the reconnection that follows attempt failed
// ones: BackoffMin doubled per attempt up to BackoffMax, then a random
// point in its upper half, so that edges cut off together do not come back
// together.
func (s *Shipper) backoff(attempt int) time.Duration {
	d := s.cfg.BackoffMax
	if attempt < 30 {
		d = min(s.cfg.BackoffMin<<attempt, s.cfg.BackoffMax)
	}
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// errConnectTimeout ends a stream whose Welcome did not come in time.
var errConnectTimeout = errors.New("edge: ship: no welcome from the primary within the connect timeout")

// session runs one stream, on a connection of its own, until it fails. It
// reports whether any batch was acknowledged.
func (s *Shipper) session(ctx context.Context) (progress bool, err error) {
	// A new connection per stream: after a failure the old one is suspect
	// (a blackholed connection looks alive until keepalive gives up).
	cc, err := grpc.NewClient(s.cfg.Primary, s.dialOpts...)
	if err != nil {
		return false, fmt.Errorf("edge: ship: %w", err)
	}
	defer func() { _ = cc.Close() }()

	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(s.cfg.ConnectTimeout, func() { cancel(errConnectTimeout) })
	stream, applied, err := s.handshake(sctx, cc)
	if !timer.Stop() {
		err = context.Cause(sctx)
	}
	if err != nil {
		return false, err
	}
	next, err := s.resume(sctx, applied)
	if err != nil {
		return false, err
	}
	s.m.connected.Set(1)
	s.m.appliedSeq.Set(float64(applied))
	s.mu.Lock()
	s.stats.Connected, s.stats.Connects, s.stats.AppliedSeq, s.stats.SentSeq = true, s.stats.Connects+1, applied, applied
	s.mu.Unlock()
	s.logger.Info("ship: connected", "primary", s.cfg.Primary, "applied_seq", applied, "backlog", s.log.Stats().Records)
	defer func() {
		s.m.connected.Set(0)
		s.m.inFlight.Set(0)
		s.mu.Lock()
		s.stats.Connected, s.stats.InFlight = false, 0
		s.inFlight = s.inFlight[:0]
		s.mu.Unlock()
		// After a fallback to gzip: the primary may have been upgraded
		// since it refused zstd, so the next stream asks for it again.
		s.useCompression(s.cfg.Compression)
	}()

	st := &shipStream{
		s: s, stream: stream, next: next,
		window:  make(chan struct{}, s.cfg.MaxInFlight),
		flights: make(chan *flight, s.cfg.MaxInFlight),
	}
	st.moved()
	s.cur.Store(st)
	defer s.cur.Store(nil)
	var wg sync.WaitGroup
	wg.Go(func() { cancel(st.receive(sctx)) })
	if s.cfg.StallTimeout > 0 {
		wg.Go(func() { st.watch(sctx, cancel) })
	}
	if err := st.send(sctx); !errors.Is(err, io.EOF) {
		cancel(err)
	} // else the stream ended: the receiver gets why
	wg.Wait()
	return st.acked.Load(), context.Cause(sctx)
}

// handshake opens the stream and exchanges Hello and Welcome.
func (s *Shipper) handshake(ctx context.Context, cc *grpc.ClientConn) (longhaulv1.Shipper_ShipClient, uint64, error) {
	opts := []grpc.CallOption{grpc.ForceCodecV2(wire.Codec{})}
	compression := *s.compression.Load()
	if compression != CompressionNone {
		opts = append(opts, grpc.UseCompressor(compression))
	}
	stream, err := longhaulv1.NewShipperClient(cc).Ship(ctx, opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("edge: ship: open stream to %s: %w", s.cfg.Primary, err)
	}
	hello := &longhaulv1.Hello{EdgeId: s.cfg.EdgeID, Region: s.cfg.Region}
	sent := time.Now()
	if err := stream.Send(&longhaulv1.ShipRequest{Kind: &longhaulv1.ShipRequest_Hello{Hello: hello}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("edge: ship: hello: %w", err)
	} // on io.EOF, Recv says why
	m, err := stream.Recv()
	if err != nil {
		if compression == CompressionZstd && cannotDecompress(err) {
			s.useCompression(CompressionGzip)
			s.logger.Warn("ship: the primary cannot decode zstd (is it older than this edge?): shipping gzip to it; the next stream after this one asks for zstd again",
				"primary", s.cfg.Primary, "err", err)
		}
		return nil, 0, fmt.Errorf("edge: ship: welcome: %w", err)
	}
	w := m.GetWelcome()
	if w == nil {
		return nil, 0, fmt.Errorf("edge: ship: the primary answered the hello with %T, not a welcome", m.Kind)
	}
	// The first measure of the link, for the steering until acks come.
	s.lastShip.Store(int64(time.Since(sent)))
	return stream, w.AppliedSeq, nil
}

// useCompression makes c the compression of the next streams.
func (s *Shipper) useCompression(c string) {
	s.compression.Store(&c)
	for _, codec := range []string{CompressionZstd, CompressionGzip, CompressionNone} {
		v := 0.0
		if codec == c {
			v = 1
		}
		s.m.compression.WithLabelValues(codec).Set(v)
	}
}

// cannotDecompress tells whether err is a gRPC server's refusal of a
// stream for its compression: UNIMPLEMENTED, naming the grpc-encoding it
// has no decompressor for.
func cannotDecompress(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unimplemented && strings.Contains(st.Message(), "grpc-encoding")
}

// resume truncates what the primary has applied and returns the first
// sequence to send, after checking that the primary's applied sequence can
// be a prefix of this WAL.
func (s *Shipper) resume(ctx context.Context, applied uint64) (uint64, error) {
	st := s.log.Stats()
	switch {
	case applied > st.LastSeq:
		return 0, fmt.Errorf("%w: the primary has applied up to sequence %d for edge %q, but this WAL never went beyond %d "+
			"(was the edge id reused with a new disk?)", ErrLedgerMismatch, applied, s.cfg.EdgeID, st.LastSeq)
	case applied < st.TruncatedSeq:
		return 0, fmt.Errorf("%w: the primary has applied up to sequence %d for edge %q, but this WAL has already truncated up to %d "+
			"after the primary acknowledged it (was the primary's database restored from a backup?)", ErrLedgerMismatch, applied, s.cfg.EdgeID, st.TruncatedSeq)
	}
	if err := s.log.Truncate(ctx, applied); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		// Not fatal: the records are applied, they only take quota.
		s.logger.Error("ship: truncating the WAL", "up_to", applied, "err", err)
	}
	return applied + 1, nil
}

// shipStream is the state of one stream.
type shipStream struct {
	s      *Shipper
	stream longhaulv1.Shipper_ShipClient
	// window holds a token per batch in flight; flights the batches, in
	// the order sent. Both have room for MaxInFlight.
	window  chan struct{}
	flights chan *flight
	acked   atomic.Bool
	// movedAt is when a batch was last sent or an ack received (unix
	// nanoseconds); sendPhase and recvPhase where the sender and the
	// receiver are. The watchdog reads them.
	movedAt              atomic.Int64
	sendPhase, recvPhase phase

	// Sender only: the next sequence to read, and records read but left
	// for the next batch; the steering last computed, and when; whether
	// the WAL has failed (it takes no more records: ship what there is).
	next      uint64
	carry     []wal.Record
	steered   steering
	steeredAt time.Time
	walFailed bool
}

// flight is a batch sent and not yet acknowledged.
type flight struct {
	first, last uint64
	sent        time.Time
	oldest      time.Time // AppendedAt of its oldest record
	records     int
	insightsIn  int // insights decoded from its records
	insightsOut int // winners sent
	completions int
	bad         []uint64 // sequences of records that did not decode
	badErr      error    // the first one's error
	// waits are its records' queue waits (append to send), in runs of
	// records whose waits fall in one meter bucket, each run with the
	// longest of its waits: records are in append order, so a batch has at
	// most one run per bucket however many records it holds, and each
	// record's end-to-end latency at the ack is its wait plus the round
	// trip, within a bucket's width (about 9 %), never less.
	waits []waitRun
}

type waitRun struct {
	d time.Duration
	n uint64
}

// queueWaits returns the runs of recs' waits from their append to sent.
func queueWaits(recs []wal.Record, sent time.Time) []waitRun {
	var runs []waitRun
	var prevAt time.Time
	prevBucket := -1
	for _, r := range recs {
		if len(runs) > 0 && r.AppendedAt.Equal(prevAt) {
			runs[len(runs)-1].n++
			continue
		}
		prevAt = r.AppendedAt
		d := max(sent.Sub(r.AppendedAt), 0)
		b := meterBucket(d)
		if b == prevBucket {
			runs[len(runs)-1].n++
			runs[len(runs)-1].d = max(runs[len(runs)-1].d, d)
			continue
		}
		prevBucket = b
		runs = append(runs, waitRun{d: d, n: 1})
	}
	return runs
}

// send sends batches while the window allows, until the stream fails.
func (st *shipStream) send(ctx context.Context) error {
	s := st.s
	// The first batches of a stream are smaller, doubling up to
	// MaxBatchBytes: HTTP/2 flow control opens the window from 64 KiB
	// one round trip at a time, so over a long link a small first batch
	// reaches the primary, and gets applied, while a full one would still
	// be on its way.
	limit := min(s.cfg.MaxBatchBytes, shipFirstBatchBytes)
	for {
		st.sendPhase.set(phaseWindow)
		select {
		case st.window <- struct{}{}:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		recs, err := st.collect(ctx, limit)
		if err != nil {
			return err
		}
		limit = min(2*limit, s.cfg.MaxBatchBytes)
		st.sendPhase.set(phaseBuild)
		req, f, err := s.build(recs)
		if err != nil {
			return err
		}
		payload := 0
		for _, r := range recs {
			payload += len(r.Payload)
		}
		f.sent = time.Now()
		f.waits = queueWaits(recs, f.sent)
		st.flights <- f // never blocks: the window token was taken
		n := len(st.flights)
		s.m.inFlight.Set(float64(n))
		s.mu.Lock()
		s.inFlight = append(s.inFlight, f.sent)
		s.mu.Unlock()
		st.sendPhase.set(phaseSend)
		if err := st.stream.SendMsg(req); err != nil {
			return err
		}
		st.moved()
		s.m.batchesSent.Inc()
		s.m.recordsSent.Add(float64(f.records))
		s.m.batchRecords.Observe(float64(f.records))
		s.m.batchBytes.Observe(float64(payload))
		s.mu.Lock()
		s.stats.BatchesSent++
		s.stats.RecordsSent += uint64(f.records)
		s.stats.SentSeq = f.last
		s.stats.InFlight = n
		s.stats.PeakInFlight = max(s.stats.PeakInFlight, n)
		s.stats.LastBatchRecords, s.stats.LastBatchBytes = f.records, payload
		s.mu.Unlock()
	}
}

// steering is how long the oldest record of a batch that is not full may
// wait, and why.
type steering struct {
	// mode is "budget", "fixed" or "max_age" (see BatchReport.Mode).
	mode string
	// wait is how long the oldest record may wait, limit its cap.
	wait, limit time.Duration
	// ship is the expected p99 of a batch's send to ack, apply included.
	ship time.Duration
}

// steer returns the steering at now (see ShipperConfig.Budget).
func (s *Shipper) steer(now time.Time) steering {
	rt, n := s.stages.m[stageRoundTrip].window(now, 0.99)
	ap, _ := s.stages.m[stageApply].window(now, 0.99)
	g := steering{limit: s.cfg.MaxBatchAge, ship: rt[0] + ap[0]}
	if n == 0 {
		// Nothing measured in the window (a new stream, or an idle edge):
		// until acks say otherwise, a batch takes its budgeted shares.
		b := s.cfg.Budget
		g.ship = max(time.Duration(s.lastShip.Load()), share(b.VisibleP99, b.Shares.RoundTrip+b.Shares.Apply))
	}
	s.mu.Lock()
	if len(s.inFlight) > 0 {
		g.ship = max(g.ship, now.Sub(s.inFlight[0]))
	}
	s.mu.Unlock()
	switch b := s.cfg.Budget; {
	case s.cfg.FixedInterval > 0:
		g.mode, g.wait, g.limit = "fixed", s.cfg.FixedInterval, s.cfg.FixedInterval
	case b.VisibleP99 > 0:
		g.mode, g.wait = "budget", steerWait(b.VisibleP99, g.ship, b.Margin, s.cfg.MaxBatchAge)
	default:
		g.mode, g.wait = "max_age", s.cfg.MaxBatchAge
	}
	return g
}

// steerEvery is how often the sender recomputes the steering while it
// waits for records: often enough to follow a link slowing down (seen in
// the age of the oldest batch in flight) within a few percent of a budget.
const steerEvery = 10 * time.Millisecond

// deadline is when a batch whose oldest record was appended at must be
// sent.
func (st *shipStream) deadline(at, now time.Time) time.Time {
	s := st.s
	if now.Sub(st.steeredAt) >= steerEvery || st.steeredAt.IsZero() {
		st.steered, st.steeredAt = s.steer(now), now
		s.m.targetWait.Set(st.steered.wait.Seconds())
		s.m.expectedShip.Set(st.steered.ship.Seconds())
		s.mu.Lock()
		s.stats.TargetWait = st.steered.wait
		s.mu.Unlock()
	}
	if iv := s.cfg.FixedInterval; iv > 0 {
		return at.Truncate(iv).Add(iv)
	}
	return at.Add(st.steered.wait)
}

// collect returns the records of the next batch: as many as are in the WAL
// from st.next, up to MaxBatchRecords and maxBytes of payload; when the WAL
// has no more, it waits for more until the oldest record has waited as long
// as the steering allows (see deadline), recomputing it meanwhile.
func (st *shipStream) collect(ctx context.Context, maxBytes int) ([]wal.Record, error) {
	s := st.s
	maxRecs := s.cfg.MaxBatchRecords
	var recs []wal.Record
	bytes := 0
	for {
		if len(st.carry) == 0 {
			st.sendPhase.set(phaseRead)
			got, err := s.log.Read(ctx, st.next, maxRecs-len(recs), maxBytes-bytes)
			if err != nil {
				return nil, fmt.Errorf("edge: ship: read the WAL: %w", err)
			}
			if len(got) == 0 {
				var wake time.Time
				if len(recs) > 0 {
					now := time.Now()
					deadline := st.deadline(recs[0].AppendedAt, now)
					if st.walFailed || !now.Before(deadline) {
						return recs, nil
					}
					wake = deadline
					if recheck := now.Add(steerEvery); s.cfg.FixedInterval == 0 && s.cfg.Budget.VisibleP99 > 0 && recheck.Before(deadline) {
						wake = recheck
					}
				}
				st.sendPhase.set(phaseWait)
				if _, err := st.wait(ctx, wake); err != nil {
					return nil, err
				}
				continue // more records, the deadline, or a new steering
			}
			if got[0].Seq != st.next {
				// Only a truncation past the primary's ledger does this,
				// which resume rules out; start the stream over to check.
				return nil, fmt.Errorf("edge: ship: read the WAL from %d: it starts at %d", st.next, got[0].Seq)
			}
			st.carry, st.next = got, got[len(got)-1].Seq+1
		}
		i := 0
		for ; i < len(st.carry) && len(recs) < maxRecs; i++ {
			n := len(st.carry[i].Payload)
			if len(recs) > 0 && bytes+n > maxBytes {
				break
			}
			recs = append(recs, st.carry[i])
			bytes += n
		}
		st.carry = st.carry[i:]
		if len(st.carry) > 0 || len(recs) >= maxRecs || bytes >= maxBytes {
			return recs, nil
		}
	}
}

// wait waits for a record after st.next-1, until deadline if it is set. It
// reports whether there is one.
func (st *shipStream) wait(ctx context.Context, deadline time.Time) (bool, error) {
	wctx := ctx
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		wctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	err := st.s.log.Wait(wctx, st.next-1)
	switch {
	case err == nil:
		return true, nil
	case ctx.Err() != nil:
		return false, context.Cause(ctx)
	case wctx.Err() != nil:
		return false, nil // the deadline: ship what there is
	case errors.Is(err, wal.ErrFailed):
		// The WAL takes no more appends until it is reopened, but what
		// it holds is readable: ship it, then idle, acks still coming.
		if !deadline.IsZero() {
			st.walFailed = true
			return false, nil
		}
		<-ctx.Done()
		return false, context.Cause(ctx)
	default:
		return false, fmt.Errorf("edge: ship: wait for the WAL: %w", err)
	}
}

// build makes the batch of recs (contiguous, not empty), encoded (see
// encodeBatch).
func (s *Shipper) build(recs []wal.Record) (wire.Encoded, *flight, error) {
	f := &flight{first: recs[0].Seq, last: recs[len(recs)-1].Seq, oldest: recs[0].AppendedAt, records: len(recs)}
	vals := make([]longhaulv1.BatchInsight, len(recs)) // one allocation for the batch's insights
	ins := make([]*longhaulv1.BatchInsight, 0, len(recs))
	raws := make([][]byte, 0, len(recs))
	var completions []*longhaulv1.ScanCompletion
	for i, r := range recs {
		if r.AppendedAt.Before(f.oldest) {
			f.oldest = r.AppendedAt
		}
		if raw, ok := decodeInsight(r.Payload, &vals[i]); ok {
			ins, raws = append(ins, &vals[i]), append(raws, raw)
			continue
		}
		rec, err := DecodeRecord(r.Payload)
		if err != nil {
			if f.badErr == nil {
				f.badErr = err
			}
			f.bad = append(f.bad, r.Seq)
			continue
		}
		switch k := rec.Kind.(type) {
		case *longhaulv1.WalRecord_Insight:
			raw, err := proto.Marshal(k.Insight)
			if err != nil {
				return nil, nil, fmt.Errorf("edge: ship: encode record %d: %w", r.Seq, err)
			}
			ins, raws = append(ins, k.Insight), append(raws, raw)
		case *longhaulv1.WalRecord_Completion:
			completions = append(completions, k.Completion)
		}
	}
	p := batchParts{edgeID: s.cfg.EdgeID, first: f.first, last: f.last, raws: raws,
		completions: completions, oldest: f.oldest.UnixMicro()}
	f.insightsIn, f.completions = len(ins), len(completions)
	if len(ins) > 0 {
		c := coalesce.Collapse(ins)
		p.winners, p.tallies = c.Winners, c.Tallies
		f.insightsOut = len(c.Winners)
	}
	b, err := encodeBatch(p)
	return b, f, err
}

// errOutOfSequence ends a stream after an OUT_OF_SEQUENCE ack: the next
// stream resumes after the primary's applied sequence.
type errOutOfSequence struct{ first, applied uint64 }

func (e errOutOfSequence) Error() string {
	return fmt.Sprintf("edge: ship: batch from %d is out of sequence (the primary has applied up to %d); resuming", e.first, e.applied)
}

// receive reads the acks, in order, until the stream fails.
func (st *shipStream) receive(ctx context.Context) error {
	s := st.s
	for {
		st.recvPhase.set(phaseRecv)
		m, err := st.stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("edge: ship: the primary ended the stream")
		}
		if err != nil {
			return fmt.Errorf("edge: ship: %w", err)
		}
		ack := m.GetAck()
		if ack == nil {
			return fmt.Errorf("edge: ship: expected an ack, got %T", m.Kind)
		}
		var f *flight
		select {
		case f = <-st.flights:
			<-st.window
		default:
			return fmt.Errorf("edge: ship: ack for %d..%d with no batch in flight", ack.FirstSeq, ack.LastSeq)
		}
		now := time.Now()
		s.m.inFlight.Set(float64(len(st.flights)))
		if ack.FirstSeq != f.first || ack.LastSeq != f.last {
			return fmt.Errorf("edge: ship: ack for %d..%d, but the batch in flight is %d..%d", ack.FirstSeq, ack.LastSeq, f.first, f.last)
		}
		s.m.acks.WithLabelValues(strings.ToLower(ack.Status.String())).Inc()
		switch ack.Status {
		case longhaulv1.Ack_APPLIED, longhaulv1.Ack_DUPLICATE:
		case longhaulv1.Ack_OUT_OF_SEQUENCE:
			s.mu.Lock()
			s.stats.OutOfSequence++
			s.mu.Unlock()
			return errOutOfSequence{first: f.first, applied: ack.AppliedSeq}
		default:
			return fmt.Errorf("edge: ship: ack for %d..%d with unknown status %v", f.first, f.last, ack.Status)
		}
		st.acked.Store(true)
		st.moved()
		st.recvPhase.set(phaseTruncate)
		s.acked(ctx, ack, f, now)
	}
}

// moved notes that a batch was sent or an ack received.
func (st *shipStream) moved() { st.movedAt.Store(time.Now().UnixNano()) }

// errStalled ends a stream on which nothing moved for StallTimeout.
type errStalled struct {
	idle             time.Duration
	unacked          uint64
	sender, receiver string
}

func (e errStalled) Error() string {
	return fmt.Sprintf("edge: ship: the stream stalled: nothing sent or acknowledged for %v with %d records unacknowledged "+
		"(sender: %s, receiver: %s); reconnecting", e.idle.Round(time.Millisecond), e.unacked, e.sender, e.receiver)
}

// watch ends the stream with errStalled when nothing moved on it for
// StallTimeout while the WAL holds records the primary has not
// acknowledged. It returns when ctx ends.
func (st *shipStream) watch(ctx context.Context, cancel context.CancelCauseFunc) {
	s := st.s
	every := max(min(s.cfg.StallTimeout/4, time.Second), time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Idle since the last move, or since the oldest record waiting
		// was appended if later: an edge idle for an hour has not stalled
		// when a push comes.
		ws := s.log.Stats()
		since := time.Unix(0, st.movedAt.Load())
		if ws.OldestAppendedAt.After(since) {
			since = ws.OldestAppendedAt
		}
		idle := time.Since(since)
		s.mu.Lock()
		applied := s.stats.AppliedSeq
		s.mu.Unlock()
		last := ws.LastSeq
		if idle < s.cfg.StallTimeout || last <= applied {
			continue
		}
		err := errStalled{idle: idle, unacked: last - applied, sender: st.sendPhase.String(), receiver: st.recvPhase.String()}
		s.m.stalls.Inc()
		s.mu.Lock()
		s.stats.Stalls++
		s.mu.Unlock()
		s.logger.Error("ship: "+err.Error(), "idle", idle, "unacknowledged", err.unacked,
			"sender", err.sender, "receiver", err.receiver)
		cancel(err)
		return
	}
}

// phase is where a stream's sender or receiver is, for Stats and the
// watchdog.
type phase struct{ v atomic.Int32 }

// The phases. The sender waits for room in the window, reads the WAL, waits
// for records (or a batch's deadline), builds a batch and sends it; the
// receiver waits for an ack, then truncates the WAL.
const (
	phaseStart int32 = iota
	phaseWindow
	phaseRead
	phaseWait
	phaseBuild
	phaseSend
	phaseRecv
	phaseTruncate
)

var phaseNames = [...]string{"start", "window", "read", "wait", "build", "send", "recv", "truncate"}

func (p *phase) set(v int32)    { p.v.Store(v) }
func (p *phase) String() string { return phaseNames[p.v.Load()] }

// acked accounts for an APPLIED or DUPLICATE ack of f and truncates the WAL
// up to the primary's applied sequence.
func (s *Shipper) acked(ctx context.Context, ack *longhaulv1.Ack, f *flight, now time.Time) {
	applied := ack.Status == longhaulv1.Ack_APPLIED
	rt := now.Sub(f.sent)
	s.m.roundTrip.Observe(rt.Seconds())
	s.m.endToEnd.Observe(now.Sub(f.oldest).Seconds())
	var apply time.Duration
	if ack.ApplyTime != nil {
		apply = ack.ApplyTime.AsDuration()
		s.m.applyTime.Observe(apply.Seconds())
		s.stages.observe(stageApply, apply, 1)
	}
	s.stages.observe(stageRoundTrip, max(rt-apply, 0), 1)
	for _, w := range f.waits {
		s.stages.observe(stageQueueWait, w.d, w.n)
		s.stages.observe(stageEndToEnd, w.d+rt, w.n)
	}
	s.lastShip.Store(int64(rt))
	s.m.appliedSeq.Set(float64(ack.AppliedSeq))
	if applied {
		s.m.recordsApplied.Add(float64(f.records))
		s.m.insightsIn.Add(float64(f.insightsIn))
		s.m.insightsOut.Add(float64(f.insightsOut))
		s.m.coalesced.Add(float64(f.insightsIn - f.insightsOut))
		s.m.badRecords.Add(float64(len(f.bad)))
	}
	s.mu.Lock()
	if len(s.inFlight) > 0 {
		s.inFlight = s.inFlight[1:]
	}
	s.stats.AppliedSeq = max(s.stats.AppliedSeq, ack.AppliedSeq)
	s.stats.InFlight = max(s.stats.InFlight-1, 0)
	if applied {
		s.stats.Applied++
		s.stats.RecordsApplied += uint64(f.records)
		s.stats.InsightsIn += uint64(f.insightsIn)
		s.stats.InsightsOut += uint64(f.insightsOut)
		s.stats.Coalesced += uint64(f.insightsIn - f.insightsOut)
		s.stats.Completions += uint64(f.completions)
		s.stats.BadRecords += uint64(len(f.bad))
		s.stats.Rows += uint64(max(ack.Rows, 0))
		s.stats.DeadLetters += uint64(max(ack.DeadLetters, 0))
	} else {
		s.stats.Duplicates++
	}
	s.mu.Unlock()
	if applied && len(f.bad) > 0 {
		seqs := f.bad
		if len(seqs) > 10 {
			seqs = seqs[:10]
		}
		s.logger.Error("ship: skipped WAL records that do not decode; the primary never got them",
			"count", len(f.bad), "seqs", seqs, "err", f.badErr)
	}
	if ack.DeadLetters > 0 {
		s.logger.Warn("ship: the primary refused rows (see its dead_letters table)",
			"first_seq", f.first, "last_seq", f.last, "dead_letters", ack.DeadLetters)
	}
	// Never beyond the WAL: a DUPLICATE may report a ledger ahead of what
	// this stream sent, and resume checks that it is within the WAL.
	upTo := min(ack.AppliedSeq, s.log.Stats().LastSeq)
	if err := s.log.Truncate(ctx, upTo); err != nil && ctx.Err() == nil {
		// The next ack truncates up to its applied sequence, this range
		// included.
		s.logger.Error("ship: truncating the WAL", "up_to", upTo, "err", err)
	}
}

// shipWireCounter counts the bytes gRPC sends on the streams (batches, and
// one hello per stream), encoded and then compressed and framed: what
// compression saves.
type shipWireCounter struct{ s *Shipper }

func (shipWireCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (shipWireCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (shipWireCounter) HandleConn(context.Context, stats.ConnStats) {}

func (w shipWireCounter) HandleRPC(_ context.Context, st stats.RPCStats) {
	if p, ok := st.(*stats.OutPayload); ok {
		w.s.m.payloadBytes.Add(float64(p.Length))
		w.s.m.wireBytes.Add(float64(p.WireLength))
		w.s.mu.Lock()
		w.s.stats.PayloadBytes += uint64(p.Length)
		w.s.stats.WireBytes += uint64(p.WireLength)
		w.s.mu.Unlock()
	}
}

// shipMetrics are the shipper's Prometheus metrics.
type shipMetrics struct {
	batchesSent, recordsSent, payloadBytes, wireBytes  prometheus.Counter
	acks                                               *prometheus.CounterVec
	recordsApplied, insightsIn, insightsOut, coalesced prometheus.Counter
	badRecords, reconnects, stalls                     prometheus.Counter
	roundTrip, applyTime, endToEnd                     prometheus.Histogram
	batchRecords, batchBytes                           prometheus.Histogram
	inFlight, connected, appliedSeq, ledgerMismatch    prometheus.Gauge
	targetWait, expectedShip                           prometheus.Gauge
	compression                                        *prometheus.GaugeVec
	all                                                []prometheus.Collector
}

func newShipMetrics(s *Shipper) *shipMetrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "longhaul_edge_ship_" + name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: "longhaul_edge_ship_" + name, Help: help})
	}
	histogram := func(name, help string, start float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: "longhaul_edge_ship_" + name, Help: help,
			Buckets: prometheus.ExponentialBuckets(start, 2, 18)})
	}
	m := &shipMetrics{
		batchesSent:  counter("batches_sent_total", "Batches sent to the primary, resends included."),
		recordsSent:  counter("records_sent_total", "WAL records covered by the batches sent, resends included."),
		payloadBytes: counter("payload_bytes_total", "Encoded size of the batches sent, before compression."),
		wireBytes:    counter("wire_bytes_total", "Bytes gRPC sent on the shipping streams: compressed, with gRPC framing."),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "longhaul_edge_ship_acks_total",
			Help: "Acknowledgements from the primary, by status."}, []string{"status"}),
		recordsApplied: counter("records_applied_total", "WAL records in batches the primary applied."),
		insightsIn:     counter("insights_in_total", "Insights read from the WAL for the batches the primary applied."),
		insightsOut:    counter("insights_out_total", "Insight rows sent for those batches after coalescing (one per key and batch)."),
		coalesced:      counter("insights_coalesced_total", "Insights coalesced away before shipping: insights in minus rows out."),
		badRecords:     counter("bad_records_total", "WAL records skipped because they do not decode."),
		reconnects:     counter("reconnects_total", "Streams, or attempts to open one, that failed and were followed by a reconnect."),
		stalls:         counter("stalls_total", "Streams ended because nothing was sent or acknowledged on them for the stall timeout while records waited."),
		roundTrip:      histogram("round_trip_seconds", "From sending a batch to its acknowledgement.", 0.001),
		applyTime:      histogram("apply_seconds", "Time the primary spent applying a batch, as its ack reports.", 0.0005),
		endToEnd:       histogram("end_to_end_seconds", "From the append of a batch's oldest record to the batch's acknowledgement.", 0.002),
		inFlight:       gauge("in_flight", "Batches sent and not yet acknowledged."),
		connected:      gauge("connected", "1 while a shipping stream is up."),
		appliedSeq:     gauge("applied_seq", "The primary's applied sequence for this edge, as last heard."),
		ledgerMismatch: gauge("ledger_mismatch", "1 when shipping stopped because the primary's ledger does not match the WAL."),
		batchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "longhaul_edge_ship_batch_records",
			Help: "WAL records per batch sent.", Buckets: prometheus.ExponentialBuckets(1, 2, 18)}),
		batchBytes: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "longhaul_edge_ship_batch_bytes",
			Help: "WAL payload bytes per batch sent (before coalescing and compression).", Buckets: prometheus.ExponentialBuckets(256, 2, 20)}),
		targetWait:   gauge("target_wait_seconds", "How long the oldest record of a batch that is not full may wait before the batch is sent, as the shipper last decided (budget, fixed interval or max age)."),
		expectedShip: gauge("expected_round_trip_seconds", "The p99 of a batch's send to ack, apply included, the budget's steering expects."),
		compression: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "longhaul_edge_ship_compression",
			Help: "1 for the compression the shipping streams use (zstd, gzip or none), 0 for the others; gzip where zstd was configured means the primary cannot decode zstd."}, []string{"codec"}),
	}
	m.all = []prometheus.Collector{m.batchesSent, m.recordsSent, m.payloadBytes, m.wireBytes, m.acks,
		m.recordsApplied, m.insightsIn, m.insightsOut, m.coalesced, m.badRecords, m.reconnects, m.stalls,
		m.roundTrip, m.applyTime, m.endToEnd, m.inFlight, m.connected, m.appliedSeq, m.ledgerMismatch,
		m.batchRecords, m.batchBytes, m.targetWait, m.expectedShip, m.compression}
	// The backlog (records, bytes, oldest age) is the WAL's state: the edge
	// exports it as longhaul_edge_wal_*.
	return m
}

func (m *shipMetrics) register(r prometheus.Registerer) error {
	for _, c := range m.all {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
