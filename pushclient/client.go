package pushclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// Client pushes insights and scan completions to edges. It is safe for
// concurrent use; each call retries on its own, and all share the
// connections and the Picker.
type Client struct {
	cfg     Config
	picker  Picker
	log     *slog.Logger
	metrics *metrics
	dial    []grpc.DialOption
	now     func() time.Time // the clock of retry hints; tests replace it

	closing chan struct{} // closed by Close: wakes calls waiting to retry

	mu     sync.Mutex
	closed bool
	conns  map[string]*grpc.ClientConn // one per edge, made on first use
	holds  map[string]time.Time        // edges whose retry hint asks not to be tried before then
}

// New returns a Client. It connects to no edge yet: each connection is
// made on the first call that needs it.
func New(cfg Config) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:     cfg,
		picker:  cfg.Picker,
		log:     cfg.Logger,
		metrics: m,
		now:     time.Now,
		closing: make(chan struct{}),
		conns:   map[string]*grpc.ClientConn{},
		holds:   map[string]time.Time{},
	}
	if c.picker == nil {
		c.picker = NewOrderedPicker(cfg.Edges, cfg.EdgeCooldown)
	}
	c.dial = []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTimeout, PermitWithoutStream: true}),
	}
	if cfg.Token != "" {
		c.dial = append(c.dial, grpc.WithPerRPCCredentials(bearer{header: "Bearer " + cfg.Token, allowInsecure: cfg.AllowInsecureToken}))
	}
	c.dial = append(c.dial, cfg.DialOptions...)
	return c, nil
}

// Close closes the connections. Calls under way end with ErrClosed (what
// they had acknowledged before stays durable). Safe to call twice.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.closing)
	conns := c.conns
	c.conns = nil
	c.mu.Unlock()
	var errs []error
	for _, cc := range conns {
		if err := cc.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// ingest returns a client of the edge at addr. A connection in
// TRANSIENT_FAILURE is replaced: gRPC would fail the call at once with the
// connection's last error (and keeps that state, "sticky", until a
// reconnection in its own backoff succeeds), while the Picker chose addr to
// learn how the edge is now.
func (c *Client) ingest(addr string) (longhaulv1.IngestClient, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	cc := c.conns[addr]
	var stale *grpc.ClientConn
	if cc != nil && cc.GetState() == connectivity.TransientFailure {
		stale, cc = cc, nil
		delete(c.conns, addr)
	}
	var err error
	if cc == nil {
		if cc, err = grpc.NewClient(addr, c.dial...); err == nil {
			c.conns[addr] = cc
		}
	}
	c.mu.Unlock()
	if stale != nil {
		_ = stale.Close()
	}
	if err != nil {
		// An address gRPC cannot use is an edge that does not work.
		return nil, status.Errorf(codes.Unavailable, "pushclient: edge %s: %v", addr, err)
	}
	return longhaulv1.NewIngestClient(cc), nil
}

// call is the state of one Push or Complete across its attempts.
type call struct {
	method   string // of the RPC: PushStream or CompleteScan
	attempts int
	rounds   int // rounds of edges tried in vain since the last success: the backoff's exponent
}

// attemptFunc sends what one attempt carries to the edge at addr.
type attemptFunc func(ctx context.Context, ingest longhaulv1.IngestClient, addr string) error

// retry runs attempt on edges the Picker chooses until one acknowledges
// it, and returns that edge. An attempt that fails for a reason of the
// edge or the link moves on to the next edge at once; once every edge
// failed, retry waits (backoff, or until the first retry hint ends) and
// starts a new round. It returns the first error that sending again cannot
// cure (permanent, with the edge that answered it), or the context's error
// once ctx ends (not permanent), or ErrClosed.
func (c *Client) retry(ctx context.Context, cl *call, attempt attemptFunc) (edge string, permanent bool, err error) {
	tried := map[string]bool{}
	var lastErr error
	var lastEdge string
	var lastCode codes.Code
	var again string // the edge that asked this client to slow down: sent to again after its hint
	for {
		if err := c.alive(ctx); err != nil {
			return "", false, c.gaveUp(cl, err, lastEdge, lastErr)
		}
		addr, ok := again, again != ""
		again = ""
		var exclude map[string]bool
		var holdEnds time.Time
		if !ok {
			exclude, holdEnds = c.exclude(tried)
			addr, ok = c.picker.Pick(exclude)
		}
		if !ok || exclude[addr] {
			// Every edge was tried in this round, or is held by its hint.
			wait := c.backoff(cl.rounds)
			if len(tried) == 0 && !holdEnds.IsZero() {
				wait = holdEnds.Sub(c.now())
			} else {
				cl.rounds++
			}
			clear(tried)
			if err := c.sleep(ctx, wait); err != nil {
				return "", false, c.gaveUp(cl, err, lastEdge, lastErr)
			}
			continue
		}
		if lastEdge != "" && addr != lastEdge {
			c.metrics.failovers.WithLabelValues(lastEdge, lastCode.String()).Inc()
		}
		ingest, err := c.ingest(addr)
		if err == nil {
			cl.attempts++
			start := time.Now()
			err = attempt(ctx, ingest, addr)
			c.metrics.attempts.WithLabelValues(cl.method, addr, status.Code(err).String()).Inc()
			if err == nil {
				c.metrics.attemptSeconds.WithLabelValues(cl.method, addr).Observe(time.Since(start).Seconds())
				c.picker.Succeeded(addr)
				cl.rounds = 0
				return addr, false, nil
			}
		}
		// An attempt cut short by the caller or by Close is not the edge's
		// fault.
		if aerr := c.alive(ctx); aerr != nil {
			return "", false, c.gaveUp(cl, aerr, lastEdge, lastErr)
		}
		if rateLimited(err) {
			// The edge is well: this client is over its rate there. Wait
			// for the edge's hint and send to it again; another edge would
			// take the load off the client's limit but not off the region.
			lastErr, lastEdge, lastCode = err, addr, status.Code(err)
			c.metrics.retries.WithLabelValues(cl.method, addr, lastCode.String()).Inc()
			c.metrics.rateLimited.WithLabelValues(addr).Inc()
			wait, ok := RetryDelay(err)
			if !ok {
				wait = c.cfg.MinBackoff
			}
			wait += rand.N(wait/8 + 1) // clients limited together do not come back together
			c.log.Debug("pushclient: over the edge's rate for this client; waiting its hint", "method", cl.method, "edge", addr, "wait", wait)
			if err := c.sleep(ctx, wait); err != nil {
				return "", false, c.gaveUp(cl, err, lastEdge, lastErr)
			}
			again = addr
			continue
		}
		if !retryable(err) {
			return addr, true, err
		}
		lastErr, lastEdge, lastCode = err, addr, status.Code(err)
		c.picker.Failed(addr, err)
		c.hold(addr, err)
		tried[addr] = true
		c.metrics.retries.WithLabelValues(cl.method, addr, lastCode.String()).Inc()
		c.log.Warn("pushclient: attempt failed; sending it again", "method", cl.method, "edge", addr,
			"code", lastCode.String(), "err", status.Convert(err).Message(), "attempt", cl.attempts)
	}
}

// alive returns ErrClosed once the client is closed, or ctx's error once it
// ends.
func (c *Client) alive(ctx context.Context) error {
	if c.isClosed() {
		return ErrClosed
	}
	return ctx.Err()
}

// gaveUp is the error of a call that ended without its acknowledgement:
// err (the context's, or ErrClosed), with the last failure for context.
func (c *Client) gaveUp(cl *call, err error, lastEdge string, lastErr error) error {
	if lastErr == nil || errors.Is(lastErr, err) {
		return fmt.Errorf("pushclient: %s not acknowledged after %d attempts: %w", cl.method, cl.attempts, err)
	}
	return fmt.Errorf("pushclient: %s not acknowledged after %d attempts: %w (last failure, edge %s: %v)",
		cl.method, cl.attempts, err, lastEdge, status.Convert(lastErr).Message())
}

// hold keeps addr out of the picks until its retry hint ends, if err
// carries one.
func (c *Client) hold(addr string, err error) {
	d, ok := RetryDelay(err)
	if !ok {
		return
	}
	until := c.now().Add(d)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holds != nil && until.After(c.holds[addr]) {
		c.holds[addr] = until
	}
}

// exclude returns tried and the edges held by a retry hint, and when the
// first of those holds ends (zero when none holds).
func (c *Client) exclude(tried map[string]bool) (map[string]bool, time.Time) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.holds) == 0 {
		return tried, time.Time{}
	}
	ex := make(map[string]bool, len(tried)+len(c.holds))
	for a := range tried {
		ex[a] = true
	}
	var first time.Time
	for a, until := range c.holds {
		if !now.Before(until) {
			delete(c.holds, a)
			continue
		}
		ex[a] = true
		if first.IsZero() || until.Before(first) {
			first = until
		}
	}
	return ex, first
}

// backoff is the wait after the given number of vain rounds: between half
// and all of min(MaxBackoff, MinBackoff·2^rounds).
func (c *Client) backoff(rounds int) time.Duration {
	d := c.cfg.MaxBackoff
	if rounds < 32 {
		if e := c.cfg.MinBackoff << rounds; e > 0 && e < d {
			d = e
		}
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits for d, or until ctx ends or the client is closed.
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closing:
		return ErrClosed
	}
}

// observe records a finished call.
func (c *Client) observe(method string, start time.Time, err error) {
	code := status.Code(err)
	switch {
	case errors.Is(err, ErrClosed):
		code = codes.Canceled
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = status.FromContextError(err).Code()
	}
	c.metrics.calls.WithLabelValues(method, code.String()).Inc()
	if err == nil {
		c.metrics.callSeconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
	}
}
