package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/longhaul/longhaul/internal/serve"
	"github.com/longhaul/longhaul/internal/wire"
)

// Who may push, and how much.
//
// A checker authenticates with a client certificate (mutual TLS: Config.TLS
// with ClientAuth tls.RequireAndVerifyClientCert, `--tls-client-ca`), with a
// bearer token (Access.TokensFile, `--tokens`), or both: every mechanism the
// edge is configured with is required. The client's identity, which the
// push rate limit counts by, is its token's name, else its certificate's
// subject, else (neither configured) its IP address.
//
// Authenticated: the Ingest service (gRPC longhaul.v1.Ingest/*, HTTP POST
// /v1/insights:push and /v1/scans:complete). Not authenticated: gRPC health,
// reflection and longhaul.v1.Topology; HTTP /healthz, /readyz, /metrics,
// /v1/topology, /v1/budget and anything else outside the gateway's routes.
// Under mutual TLS the gRPC listener still asks every connection for a
// certificate during the handshake (health checks included); the HTTP
// listener verifies one only when presented, and the Ingest routes then
// require it.
//
// gRPC clients send the token as `authorization: Bearer TOKEN` metadata,
// HTTP clients as the `Authorization: Bearer TOKEN` header. Over HTTP the
// check runs before grpc-gateway (which would forward the header as
// metadata, but calls the service in-process, past the gRPC interceptors).

// Defaults of Access and of Config.MaxStreamsPerConn. DefaultClientRate is
// `longhaul edge --client-rate`'s: the Config's own default is no limit.
const (
	DefaultClientRate        = 50_000
	DefaultClientBurstTime   = 2 * time.Second
	DefaultMaxClients        = 50_000
	DefaultMaxStreamsPerConn = 64
)

// Access configures how checkers authenticate and how much each may push.
// The zero value: no tokens, no limit on a client's rate.
type Access struct {
	// TokensFile, when set, requires a bearer token from that file on every
	// Ingest call (see the format above parseTokens). Read again when it
	// changes. Default: none.
	TokensFile string
	// ClientRate is how many insights a second one client may push; beyond
	// it pushes get RESOURCE_EXHAUSTED with reason RATE_LIMITED and a retry
	// hint (HTTP 429, Retry-After). A scan completion counts as one
	// insight. Default 0: no limit (what embedded edges, benchmarks and
	// tests want; `longhaul edge` sets DefaultClientRate, 50,000). Clients
	// not authenticated are told apart by IP address only: checkers behind
	// one NAT, or on one machine, share a rate.
	ClientRate float64
	// ClientBurst is how many insights a client may push at once, above
	// its rate, after a pause. A request larger than the burst passes once
	// the client's bucket is full. Default: DefaultClientBurstTime (2s) of
	// ClientRate (100,000 at 50,000/s).
	ClientBurst int
	// MaxClients bounds how many clients the rate limit keeps track of
	// (those seen in the last minute, or longer when a full bucket takes
	// longer to fill). Beyond it the least recently seen is forgotten, and
	// starts again with a full bucket. Default 50,000.
	MaxClients int
}

func (a Access) withDefaults() Access {
	if a.ClientBurst == 0 && a.ClientRate > 0 {
		a.ClientBurst = max(1, int(math.Ceil(a.ClientRate*DefaultClientBurstTime.Seconds())))
	}
	if a.MaxClients == 0 {
		a.MaxClients = DefaultMaxClients
	}
	return a
}

func (a Access) validate() error {
	var errs []error
	if a.ClientRate > 0 && a.ClientBurst < 1 {
		errs = append(errs, fmt.Errorf("edge: ClientBurst must be at least 1, got %d", a.ClientBurst))
	}
	if a.MaxClients < 1 {
		errs = append(errs, fmt.Errorf("edge: MaxClients must be at least 1, got %d", a.MaxClients))
	}
	return errors.Join(errs...)
}

// client is who made a request.
type client struct {
	key      string          // "token:NAME", "cert:SUBJECT" or "ip:ADDRESS": the rate limit's
	accounts map[string]bool // the accounts the client may write; nil: any
}

type clientKey struct{}

func withClient(ctx context.Context, c *client) context.Context {
	return context.WithValue(ctx, clientKey{}, c)
}

// clientOf returns who made the request of ctx: as authenticated, else
// (a Server without a Service) the peer's address.
func clientOf(ctx context.Context) *client {
	if c, ok := ctx.Value(clientKey{}).(*client); ok {
		return c
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return &client{key: "ip:" + hostOf(p.Addr.String())}
	}
	return &client{key: "ip:unknown"}
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// access authenticates requests and holds the per-client rate limit.
type access struct {
	certRequired bool
	tokens       *tokenFile             // nil: no tokens
	limiter      *rateLimiter           // nil: no limit
	refused      *prometheus.CounterVec // by reason
	log          *slog.Logger
	now          func() time.Time
}

// Reasons of longhaul_edge_requests_refused_total.
const (
	refusedUnauthenticated  = "unauthenticated"
	refusedPermissionDenied = "permission_denied"
	refusedRateLimited      = "rate_limited"
)

// secure makes the server authenticate (cfg.Access, tlsCfg) and limit
// clients' push rates, with its metrics in reg.
func (s *Server) secure(a Access, tlsCfg *tls.Config, reg prometheus.Registerer) error {
	a = a.withDefaults()
	if err := a.validate(); err != nil {
		return err
	}
	ac := &access{
		certRequired: tlsCfg != nil && tlsCfg.ClientAuth == tls.RequireAndVerifyClientCert,
		refused:      s.metrics.refused, log: s.logger, now: time.Now,
	}
	var collectors []prometheus.Collector
	if a.TokensFile != "" {
		tf, err := loadTokenFile(a.TokensFile, s.logger)
		if err != nil {
			return err
		}
		reloads := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "longhaul_edge_tokens_reloads_total",
			Help: "Times the tokens file was read again after it changed, by result (ok, or error: the tokens before kept)."}, []string{"result"})
		tf.reloads = func(ok bool) {
			if ok {
				reloads.WithLabelValues("ok").Inc()
			} else {
				reloads.WithLabelValues("error").Inc()
			}
		}
		ac.tokens = tf
		collectors = append(collectors, reloads, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "longhaul_edge_tokens",
			Help: "Tokens in the tokens file in use."}, func() float64 { return float64(tf.count()) }))
		s.logger.Info("edge: checkers need a token", "tokens_file", a.TokensFile, "tokens", tf.count())
	}
	if a.ClientRate > 0 {
		ac.limiter = newRateLimiter(a.ClientRate, a.ClientBurst, a.MaxClients)
		l := ac.limiter
		collectors = append(collectors, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "longhaul_edge_clients",
			Help: "Clients (token names, certificate subjects or addresses) the push rate limit tracks: those that pushed in the last minute."},
			func() float64 { return float64(l.active(time.Now())) }))
	}
	if reg != nil {
		for _, c := range collectors {
			if err := reg.Register(c); err != nil {
				return err
			}
		}
	}
	s.access = ac
	return nil
}

// presented is what a request shows of who sent it.
type presented struct {
	authorization string            // the Authorization value, "" if none
	cert          *x509.Certificate // a client certificate verified against the CA, or nil
	remote        string            // the peer's IP address
}

// authenticate returns the client p identifies, or an Unauthenticated
// error that never repeats what was presented.
func (a *access) authenticate(p presented) (*client, error) {
	var c *client
	if p.cert != nil {
		c = &client{key: "cert:" + p.cert.Subject.String()}
	} else if a.certRequired {
		return nil, status.Error(codes.Unauthenticated, "edge: a client certificate signed by the edge's client CA is required")
	}
	if a.tokens != nil {
		scheme, tok, _ := strings.Cut(strings.TrimSpace(p.authorization), " ")
		tok = strings.TrimSpace(tok)
		if p.authorization == "" {
			return nil, status.Error(codes.Unauthenticated, "edge: a bearer token is required (authorization: Bearer TOKEN)")
		}
		if !strings.EqualFold(scheme, "bearer") || tok == "" {
			return nil, status.Error(codes.Unauthenticated, "edge: the authorization is not a bearer token (want: Bearer TOKEN)")
		}
		t := lookup(a.tokens.current(), tok)
		if t == nil {
			return nil, status.Error(codes.Unauthenticated, "edge: unknown token")
		}
		c = &client{key: "token:" + t.name, accounts: t.accounts}
	}
	if c == nil {
		c = &client{key: "ip:" + p.remote}
	}
	return c, nil
}

// exemptMethod tells the gRPC methods anyone may call.
func exemptMethod(fullMethod string) bool {
	for _, prefix := range []string{"/grpc.health.v1.Health/", "/grpc.reflection.", "/longhaul.v1.Topology/"} {
		if strings.HasPrefix(fullMethod, prefix) {
			return true
		}
	}
	return false
}

func (a *access) fromGRPC(ctx context.Context) (context.Context, error) {
	var p presented
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			p.authorization = v[0]
		}
	}
	if pr, ok := peer.FromContext(ctx); ok {
		if pr.Addr != nil {
			p.remote = hostOf(pr.Addr.String())
		}
		if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			p.cert = ti.State.PeerCertificates[0]
		}
	}
	c, err := a.authenticate(p)
	if err != nil {
		a.refused.WithLabelValues(refusedUnauthenticated).Inc()
		a.log.Debug("edge: unauthenticated call refused", "remote", p.remote, "err", status.Convert(err).Message())
		return nil, err
	}
	return withClient(ctx, c), nil
}

func (a *access) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if exemptMethod(info.FullMethod) {
		return handler(ctx, req)
	}
	ctx, err := a.fromGRPC(ctx)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a *access) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if exemptMethod(info.FullMethod) {
		return handler(srv, ss)
	}
	ctx, err := a.fromGRPC(ss.Context())
	if err != nil {
		return err
	}
	return handler(srv, &streamWithContext{ServerStream: ss, ctx: ctx})
}

type streamWithContext struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *streamWithContext) Context() context.Context { return s.ctx }

// exemptPath tells the gateway's routes anyone may call.
func exemptPath(path string) bool { return path == "/v1/topology" }

// http authenticates the requests to next (the gateway) outside
// exemptPath: 401 with WWW-Authenticate when they fail.
func (a *access) http(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if exemptPath(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		p := presented{authorization: r.Header.Get("Authorization"), remote: hostOf(r.RemoteAddr)}
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			p.cert = r.TLS.PeerCertificates[0]
		}
		c, err := a.authenticate(p)
		if err != nil {
			a.refused.WithLabelValues(refusedUnauthenticated).Inc()
			a.log.Debug("edge: unauthenticated request refused", "remote", p.remote, "path", r.URL.Path, "err", status.Convert(err).Message())
			if a.tokens != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="longhaul"`)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]any{"code": codes.Unauthenticated, "message": status.Convert(err).Message(), "details": []any{}})
			return
		}
		next.ServeHTTP(w, r.WithContext(withClient(r.Context(), c)))
	})
}

// admit takes a request of n insights out of its client's rate, or
// refuses it (RATE_LIMITED).
func (s *Server) admit(ctx context.Context, n int) error {
	if s.access == nil || s.access.limiter == nil {
		return nil
	}
	c := clientOf(ctx)
	ok, wait := s.access.limiter.allow(c.key, max(n, 1), s.access.now())
	if ok {
		return nil
	}
	s.access.refused.WithLabelValues(refusedRateLimited).Inc()
	st, err := status.New(codes.ResourceExhausted, fmt.Sprintf(
		"edge: client %s is over its rate of insights; retry in %s", c.key, wait.Round(time.Millisecond))).WithDetails(
		&errdetails.ErrorInfo{Reason: ReasonRateLimited, Domain: ErrorDomain},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)})
	if err != nil {
		panic(err) // cannot happen: both details marshal
	}
	return st.Err()
}

// permitted refuses (PERMISSION_DENIED) a request writing an account the
// client's token is not scoped to: accountAt(i) is the account of item i
// of n, field(i) its path.
func (s *Server) permitted(ctx context.Context, n int, accountAt func(int) string, field func(int) string) error {
	if s.access == nil {
		return nil
	}
	c := clientOf(ctx)
	if c.accounts == nil {
		return nil
	}
	for i := range n {
		acct := accountAt(i)
		if c.accounts[acct] {
			continue
		}
		s.access.refused.WithLabelValues(refusedPermissionDenied).Inc()
		f := field(i)
		st, err := status.New(codes.PermissionDenied, fmt.Sprintf("%s: client %s may not write account %q", f, c.key, acct)).WithDetails(
			&errdetails.ErrorInfo{Reason: ReasonAccountNotPermitted, Domain: ErrorDomain, Metadata: map[string]string{MetaField: f, MetaAccountID: acct}})
		if err != nil {
			panic(err) // cannot happen: an ErrorInfo marshals
		}
		return st.Err()
	}
	return nil
}

// grpcOptions are the options of the edge's gRPC server: TLS, the limits
// of a connection and a message, authentication, and the codec that reads
// a push into insights sharing one copy of it (internal/wire).
func (s *Service) grpcOptions() []grpc.ServerOption {
	opts := append(serve.GRPCTLS(s.cfg.TLS),
		grpc.MaxRecvMsgSize(s.cfg.MaxRequestBytes),
		grpc.MaxConcurrentStreams(s.cfg.MaxStreamsPerConn),
		grpc.ForceServerCodecV2(wire.Codec{}))
	if a := s.server.access; a.needed() {
		opts = append(opts, grpc.ChainUnaryInterceptor(a.unary), grpc.ChainStreamInterceptor(a.stream))
	}
	return opts
}

// needed tells whether requests need to be told apart at all: to
// authenticate them, or to count them against their client's rate.
func (a *access) needed() bool {
	return a != nil && (a.tokens != nil || a.certRequired || a.limiter != nil)
}

// authHTTP authenticates the gateway's routes (see access.http).
func (s *Service) authHTTP(gw http.Handler) http.Handler {
	if !s.server.access.needed() {
		return gw
	}
	return s.server.access.http(gw)
}
