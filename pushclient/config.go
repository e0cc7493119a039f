package pushclient

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// Defaults of Config.
const (
	DefaultChunkInsights    = 1000
	DefaultStreamInsights   = 50_000
	DefaultMinBackoff       = 50 * time.Millisecond
	DefaultMaxBackoff       = 5 * time.Second
	DefaultEdgeCooldown     = 10 * time.Second
	DefaultProgressTimeout  = 20 * time.Second
	DefaultKeepaliveTime    = 10 * time.Second
	DefaultKeepaliveTimeout = 5 * time.Second
)

// maxHint bounds a retry hint from an edge, so a wrong one cannot stall a
// client for long.
const maxHint = time.Minute

// Config configures a Client. The zero value of every field but Edges (or
// Picker) means its default.
type Config struct {
	// Edges are the gRPC addresses of the edges, most preferred first.
	// Required unless Picker is set.
	Edges []string
	// Picker chooses the edge of each attempt. Default: an OrderedPicker
	// over Edges with EdgeCooldown.
	Picker Picker
	// DialOptions come after the client's own (insecure transport
	// credentials, keepalive, the Token) and so override them: pass
	// grpc.WithTransportCredentials for TLS.
	DialOptions []grpc.DialOption
	// Token, when set, is sent with every call as `authorization: Bearer
	// Token` (edges started with --tokens require one). It goes only over
	// TLS, or in plain text to a loopback address (127.0.0.0/8, ::1,
	// localhost: it does not leave the machine); to any other address in
	// plain text the call fails with Unauthenticated unless
	// AllowInsecureToken. Default: none.
	Token string
	// AllowInsecureToken sends the Token in plain text to any address: for
	// development networks only (containers on one host), where anyone on
	// the path can read it.
	AllowInsecureToken bool
	// ChunkInsights is how many insights one PushRequest (one message of a
	// stream) carries. It must not exceed the edge's MaxInsightsPerRequest
	// (10000 by default). Default 1000.
	ChunkInsights int
	// StreamInsights is how many insights one PushStream call carries before
	// it is closed and acknowledged: what a failure makes the client resend.
	// Default 50000.
	StreamInsights int
	// MinBackoff and MaxBackoff bound the wait before the client tries again
	// once every edge has failed (each wait is drawn at random between half
	// and all of min(MaxBackoff, MinBackoff·2ⁿ)). Moving on to another edge
	// does not wait. Defaults 50ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// EdgeCooldown is how long the default Picker avoids an edge after a
	// failure (longer when the edge sent a longer retry hint). Default 10s.
	EdgeCooldown time.Duration
	// ProgressTimeout abandons an attempt that makes no progress for this
	// long: no chunk of a stream taken by the connection, no answer. The
	// attempt fails with DeadlineExceeded and is retried elsewhere. It also
	// bounds each Complete attempt. Default 20s.
	ProgressTimeout time.Duration
	// KeepaliveTime and KeepaliveTimeout: a connection idle for
	// KeepaliveTime is pinged, and closed when the answer takes longer than
	// KeepaliveTimeout, so a dead link is noticed within their sum.
	// KeepaliveTime must be at least 10s: gRPC-Go pings no more often (an
	// edge would allow every 5s). Defaults 10s and 5s.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// Logger receives a line per failed attempt. Default slog.Default().
	Logger *slog.Logger
	// Metrics, when set, receives the client's metrics
	// (longhaul_pushclient_*). Clients sharing a Registerer share them.
	Metrics prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.ChunkInsights == 0 {
		c.ChunkInsights = DefaultChunkInsights
	}
	if c.StreamInsights == 0 {
		c.StreamInsights = max(DefaultStreamInsights, c.ChunkInsights)
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.EdgeCooldown == 0 {
		c.EdgeCooldown = DefaultEdgeCooldown
	}
	if c.ProgressTimeout == 0 {
		c.ProgressTimeout = DefaultProgressTimeout
	}
	if c.KeepaliveTime == 0 {
		c.KeepaliveTime = DefaultKeepaliveTime
	}
	if c.KeepaliveTimeout == 0 {
		c.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	var errs []error
	if len(c.Edges) == 0 && c.Picker == nil {
		errs = append(errs, errors.New("pushclient: Edges (or a Picker) is required"))
	}
	seen := make(map[string]bool, len(c.Edges))
	for i, e := range c.Edges {
		switch {
		case e == "":
			errs = append(errs, fmt.Errorf("pushclient: Edges[%d] is empty", i))
		case seen[e]:
			errs = append(errs, fmt.Errorf("pushclient: Edges[%d] %q is listed twice", i, e))
		}
		seen[e] = true
	}
	if c.ChunkInsights < 1 {
		errs = append(errs, fmt.Errorf("pushclient: ChunkInsights must be at least 1, got %d", c.ChunkInsights))
	}
	if c.StreamInsights < c.ChunkInsights {
		errs = append(errs, fmt.Errorf("pushclient: StreamInsights (%d) must be at least ChunkInsights (%d)", c.StreamInsights, c.ChunkInsights))
	}
	if c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		errs = append(errs, fmt.Errorf("pushclient: backoff must satisfy 0 < MinBackoff <= MaxBackoff, got %s and %s", c.MinBackoff, c.MaxBackoff))
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"EdgeCooldown", c.EdgeCooldown}, {"ProgressTimeout", c.ProgressTimeout}, {"KeepaliveTimeout", c.KeepaliveTimeout}} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("pushclient: %s must not be negative, got %s", f.name, f.d))
		}
	}
	if strings.ContainsAny(c.Token, " \t\r\n") {
		errs = append(errs, errors.New("pushclient: Token must not contain spaces or line breaks"))
	}
	if c.KeepaliveTime < 10*time.Second {
		errs = append(errs, fmt.Errorf("pushclient: KeepaliveTime must be at least 10s (gRPC's minimum), got %s", c.KeepaliveTime))
	}
	return errors.Join(errs...)
}
