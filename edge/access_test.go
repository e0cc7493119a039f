package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/tlsconf"
	"github.com/longhaul/longhaul/primary"
)

// devCerts writes a development CA and certificates (tlsconf.WriteDev)
// into a new directory and returns a function naming its files.
func devCerts(t *testing.T) func(name string) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := tlsconf.WriteDev(dir, tlsconf.DevOptions{}); err != nil {
		t.Fatal(err)
	}
	return func(name string) string { return filepath.Join(dir, name) }
}

// dialWith returns an Ingest client of addr over creds, closed when t ends.
func dialWith(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func pushOne(ctx context.Context, cc *grpc.ClientConn, ins ...*longhaulv1.Insight) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := longhaulv1.NewIngestClient(cc).Push(ctx, &longhaulv1.PushRequest{Insights: ins})
	return err
}

// httpInsight is a push body of one insight of account.
func httpInsight(scan, account, subject string) string {
	return fmt.Sprintf(`{"insights":[{"account_id":%q,"asset":"www.example.com","kind":"k","subject":%q,"severity":"HIGH",`+
		`"observed_at":%q,"scan_id":%q,"checker":"c"}]}`, account, subject, time.Now().Add(-time.Minute).Format(time.RFC3339Nano), scan)
}

// do sends an HTTP request with hc (token, if not empty, as a bearer
// token) and returns the status, body and header.
func do(t *testing.T, hc *http.Client, method, url, token, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestMutualTLS: an edge serving TLS with --tls-client-ca takes pushes
// (gRPC and HTTPS) only from checkers holding a certificate from its CA:
// none, another CA's, or plain text is refused, and nothing of theirs is
// written; its health and metrics endpoints need no certificate. It ships
// to a primary that requires mutual TLS too, and the rows appear in
// PostgreSQL.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f, other := devCerts(t), devCerts(t)
	url := pgtest.URL(t)
	primaryTLS, err := tlsconf.Flags{Cert: f("primary.pem"), Key: f("primary-key.pem"), ClientCA: f("ca.pem")}.Server()
	if err != nil {
		t.Fatal(err)
	}
	p, err := primary.Start(ctx, primary.Config{DatabaseURL: url, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler), TLS: primaryTLS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	edgeTLS, err := tlsconf.Flags{Cert: f("edge.pem"), Key: f("edge-key.pem"), ClientCA: f("ca.pem")}.Server()
	if err != nil {
		t.Fatal(err)
	}
	toPrimary, err := tlsconf.Flags{CA: f("ca.pem"), Cert: f("edge.pem"), Key: f("edge-key.pem")}.Client()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Primary: p.Addr(), TLS: edgeTLS}
	cfg.Shipper.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(toPrimary))}
	s := startSystemTBWith(t, cfg, url)

	checker := func(ca, cert func(string) string) *tls.Config {
		fl := tlsconf.Flags{CA: ca("ca.pem")}
		if cert != nil {
			fl.Cert, fl.Key = cert("checker.pem"), cert("checker-key.pem")
		}
		c, err := fl.Client()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	now := time.Now().Add(-time.Minute)
	if err := pushOne(ctx, dialWith(t, s.edge.Addr(), credentials.NewTLS(checker(f, f))), insight("scan-mtls", "k", "grpc", now)); err != nil {
		t.Fatalf("a checker with the CA's certificate: %v", err)
	}
	for name, creds := range map[string]credentials.TransportCredentials{
		"no client certificate":         credentials.NewTLS(checker(f, nil)),
		"a certificate from another CA": credentials.NewTLS(checker(f, other)),
		"plain text":                    insecure.NewCredentials(),
	} {
		if err := pushOne(ctx, dialWith(t, s.edge.Addr(), creds), insight("scan-mtls", "k", name, now)); err == nil {
			t.Errorf("gRPC, %s: accepted", name)
		}
	}

	https := func(c *tls.Config) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: c}, Timeout: 10 * time.Second}
	}
	base := "https://" + s.edge.HTTPAddr()
	if code, body, _ := do(t, https(checker(f, f)), "POST", base+"/v1/insights:push", "", httpInsight("scan-mtls", "acme", "http")); code != http.StatusOK {
		t.Fatalf("HTTPS push with the CA's certificate: %d %s", code, body)
	}
	if code, body, _ := do(t, https(checker(f, nil)), "POST", base+"/v1/insights:push", "", httpInsight("scan-mtls", "acme", "no-cert")); code != http.StatusUnauthorized || !strings.Contains(body, "client certificate") {
		t.Errorf("HTTPS push without a certificate: %d %s; want 401", code, body)
	}
	if code, body, _ := do(t, https(checker(f, other)), "POST", base+"/v1/insights:push", "", httpInsight("scan-mtls", "acme", "other-ca")); code == http.StatusOK {
		t.Errorf("HTTPS push with another CA's certificate: %d %s", code, body)
	}
	if code, _, _ := do(t, http.DefaultClient, "POST", "http://"+s.edge.HTTPAddr()+"/v1/insights:push", "", httpInsight("scan-mtls", "acme", "plain")); code == http.StatusOK {
		t.Errorf("plain HTTP push accepted")
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/v1/topology", "/v1/budget"} {
		if code, body, _ := do(t, https(checker(f, nil)), "GET", base+path, "", ""); code != http.StatusOK {
			t.Errorf("GET %s over TLS without a certificate: %d %.200s", path, code, body)
		}
	}

	eventually(t, "the two accepted pushes in PostgreSQL", func() (bool, string) {
		n := s.count(t, `SELECT count(*) FROM insights WHERE scan_id = 'scan-mtls'`)
		return n == 2, fmt.Sprint(n, " rows")
	})
	if st := s.edge.WAL().Stats(); st.AppendedRecords != 2 {
		t.Fatalf("%d records appended; want the 2 accepted", st.AppendedRecords)
	}
	if n := testutil.ToFloat64(s.edge.server.metrics.refused.WithLabelValues(refusedUnauthenticated)); n != 1 {
		t.Errorf("refused as unauthenticated: %v, want 1 (the HTTPS push without a certificate; gRPC refuses in the handshake)", n)
	}
}

// writeTokens writes a tokens file and returns its path.
func writeTokens(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func bearer(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// TestTokens: with --tokens every Ingest call needs a token from the file:
// none, an unknown one or another scheme gets UNAUTHENTICATED / 401 and
// writes nothing; a known one pushes over gRPC (unary and stream) and HTTP.
// A token scoped to accounts writing another is refused PERMISSION_DENIED
// / 403 naming the field and the account, and nothing of the request is
// written. Health, reflection, topology, /healthz, /readyz, /metrics and
// /v1/budget need no token.
func TestTokens(t *testing.T) {
	t.Parallel()
	const ci, scoped = "ci-0123456789abcdef", "acme-0123456789abcdef"
	tokens := writeTokens(t, "# tokens of the test", ci+" ci", scoped+" acme-only accounts=acme,acme2")
	s := startSystem(t, Config{Access: Access{TokensFile: tokens}})
	ctx := context.Background()
	now := time.Now().Add(-time.Minute)
	appends := func() uint64 { return s.edge.WAL().Stats().Appends }
	refused := func(reason string) float64 {
		return testutil.ToFloat64(s.edge.server.metrics.refused.WithLabelValues(reason))
	}

	// Refused before anything is written.
	for name, tok := range map[string]string{"no token": "", "an unknown token": "nope-0123456789abcdef"} {
		_, err := s.ingest.Push(bearer(ctx, tok), &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{insight("scan-t", "k", "x", now)}})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("Push, %s: %v; want UNAUTHENTICATED", name, err)
		}
		if _, err := streamOf(t, tokenIngest{s.ingest}.with(tok), request(insight("scan-t", "k", "x", now))); status.Code(err) != codes.Unauthenticated {
			t.Errorf("PushStream, %s: %v; want UNAUTHENTICATED", name, err)
		}
		_, err = s.ingest.CompleteScan(bearer(ctx, tok), &longhaulv1.CompleteScanRequest{Completion: &longhaulv1.ScanCompletion{
			ScanId: "scan-t", AccountId: "acme", Asset: "a", Checker: "c", InsightCount: 1}})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("CompleteScan, %s: %v; want UNAUTHENTICATED", name, err)
		}
		code, body, hdr := do(t, http.DefaultClient, "POST", s.http+"/v1/insights:push", tok, httpInsight("scan-t", "acme", "x"))
		if code != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(body, `"code":16`) {
			t.Errorf("HTTP, %s: %d %s %v; want 401 with WWW-Authenticate: Bearer", name, code, body, hdr)
		}
	}
	req, _ := http.NewRequest("POST", s.http+"/v1/insights:push", strings.NewReader(httpInsight("scan-t", "acme", "x")))
	req.SetBasicAuth("ci", ci)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("HTTP, the token as basic auth: %v %v; want 401", resp, err)
	} else {
		resp.Body.Close()
	}
	if n := appends(); n != 0 {
		t.Fatalf("unauthenticated calls appended %d times", n)
	}
	if n := refused(refusedUnauthenticated); n != 9 {
		t.Errorf("refused as unauthenticated: %v, want 9", n)
	}

	// A known token writes, over gRPC and HTTP.
	if _, err := s.ingest.Push(bearer(ctx, ci), &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{insight("scan-t", "k", "grpc", now)}}); err != nil {
		t.Fatalf("Push with a token: %v", err)
	}
	if _, err := streamOf(t, tokenIngest{s.ingest}.with(ci), request(insight("scan-t", "k", "stream", now))); err != nil {
		t.Fatalf("PushStream with a token: %v", err)
	}
	if code, body, _ := do(t, http.DefaultClient, "POST", s.http+"/v1/insights:push", ci, httpInsight("scan-t", "globex", "http")); code != http.StatusOK {
		t.Fatalf("HTTP push with a token: %d %s", code, body)
	}
	if code, body, _ := do(t, http.DefaultClient, "POST", s.http+"/v1/insights:push", scoped, httpInsight("scan-t", "acme2", "scoped-http")); code != http.StatusOK {
		t.Fatalf("HTTP push of a scoped token's account: %d %s", code, body)
	}

	// A scoped token writing another account: refused whole.
	before := appends()
	_, err := s.ingest.Push(bearer(ctx, scoped), &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{
		insight("scan-t", "k", "scoped-ok", now), func() *longhaulv1.Insight {
			in := insight("scan-t", "k", "scoped-other", now)
			in.AccountId = "globex"
			return in
		}()}})
	st := status.Convert(err)
	if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "insights[1].account_id") || !strings.Contains(st.Message(), `"globex"`) {
		t.Fatalf("scoped token, another account: %v; want PERMISSION_DENIED naming insights[1].account_id and globex", err)
	}
	if info := detailsOf(err).info(t, ReasonAccountNotPermitted); info.Metadata[MetaField] != "insights[1].account_id" || info.Metadata[MetaAccountID] != "globex" {
		t.Errorf("ErrorInfo %v", info)
	}
	code, body, _ := do(t, http.DefaultClient, "POST", s.http+"/v1/insights:push", scoped, httpInsight("scan-t", "globex", "scoped-http-other"))
	if code != http.StatusForbidden || !strings.Contains(body, "insights[0].account_id") || !strings.Contains(body, "globex") {
		t.Errorf("HTTP, scoped token, another account: %d %s; want 403 naming the field", code, body)
	}
	_, err = s.ingest.CompleteScan(bearer(ctx, scoped), &longhaulv1.CompleteScanRequest{Completion: &longhaulv1.ScanCompletion{
		ScanId: "scan-t", AccountId: "globex", Asset: "a", Checker: "c", InsightCount: 1}})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "completion.account_id") {
		t.Errorf("scoped token, a completion of another account: %v", err)
	}
	if n := appends(); n != before {
		t.Fatalf("refused requests appended %d times", n-before)
	}
	if n := refused(refusedPermissionDenied); n != 3 {
		t.Errorf("refused as permission denied: %v, want 3", n)
	}

	// What needs no token.
	_, cc := dialIngest(t, s.edge.Addr())
	if h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "longhaul.v1.Ingest"}); err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health without a token: %v %v", h, err)
	}
	if _, err := longhaulv1.NewTopologyClient(cc).ListMembers(ctx, &longhaulv1.ListMembersRequest{}); err != nil {
		t.Errorf("ListMembers without a token: %v", err)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/v1/topology", "/v1/budget"} {
		if code, body, _ := do(t, http.DefaultClient, "GET", s.http+path, "", ""); code != http.StatusOK {
			t.Errorf("GET %s without a token: %d %.200s", path, code, body)
		}
	}
	eventually(t, "the accepted pushes in PostgreSQL", func() (bool, string) {
		n := s.count(t, `SELECT count(*) FROM insights WHERE scan_id = 'scan-t'`)
		return n == 4, fmt.Sprint(n, " rows")
	})
}

// tokenIngest sends a token with a stream's calls (streamOf takes a
// client, not a context).
type tokenIngest struct{ longhaulv1.IngestClient }

func (c tokenIngest) with(token string) longhaulv1.IngestClient {
	return tokenStream{c.IngestClient, token}
}

type tokenStream struct {
	longhaulv1.IngestClient
	token string
}

func (c tokenStream) PushStream(ctx context.Context, opts ...grpc.CallOption) (grpc.ClientStreamingClient[longhaulv1.PushRequest, longhaulv1.PushResponse], error) {
	return c.IngestClient.PushStream(bearer(ctx, c.token), opts...)
}

// TestRateLimitPerClient: a client over its rate of insights gets
// RESOURCE_EXHAUSTED with reason RATE_LIMITED and a retry hint (HTTP 429
// with Retry-After) and nothing of it is written, while another client is
// not held back.
func TestRateLimitPerClient(t *testing.T) {
	t.Parallel()
	const a, b = "client-a-0123456789", "client-b-0123456789"
	s := startSystem(t, Config{Access: Access{TokensFile: writeTokens(t, a+" a", b+" b"), ClientRate: 1, ClientBurst: 20}})
	ctx := context.Background()
	now := time.Now().Add(-time.Minute)
	batch := func(prefix string, n int) []*longhaulv1.Insight {
		out := make([]*longhaulv1.Insight, n)
		for i := range out {
			out[i] = insight("scan-r", "k", fmt.Sprint(prefix, i), now)
		}
		return out
	}
	if _, err := s.ingest.Push(bearer(ctx, a), &longhaulv1.PushRequest{Insights: batch("a", 20)}); err != nil {
		t.Fatalf("a's burst: %v", err)
	}
	before := s.edge.WAL().Stats().Appends
	_, err := s.ingest.Push(bearer(ctx, a), &longhaulv1.PushRequest{Insights: batch("a-over", 1)})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "token:a") {
		t.Fatalf("a over its rate: %v; want RESOURCE_EXHAUSTED naming the client", err)
	}
	detailsOf(err).info(t, ReasonRateLimited)
	var hint time.Duration
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			hint = ri.GetRetryDelay().AsDuration()
		}
	}
	if hint <= 0 || hint > time.Second {
		t.Errorf("retry hint %s; want the time until one insight is back, at most 1s", hint)
	}
	if _, err := streamOf(t, tokenIngest{s.ingest}.with(a), request(batch("a-stream", 1)...)); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a's stream over its rate: %v", err)
	}
	code, body, hdr := do(t, http.DefaultClient, "POST", s.http+"/v1/insights:push", a, httpInsight("scan-r", "acme", "a-http"))
	if code != http.StatusTooManyRequests || hdr.Get("Retry-After") != "1" || !strings.Contains(body, ReasonRateLimited) {
		t.Errorf("HTTP, a over its rate: %d, Retry-After %q, %s; want 429, 1", code, hdr.Get("Retry-After"), body)
	}
	if n := s.edge.WAL().Stats().Appends; n != before {
		t.Fatalf("refused pushes appended %d times", n-before)
	}
	if _, err := s.ingest.Push(bearer(ctx, b), &longhaulv1.PushRequest{Insights: batch("b", 20)}); err != nil {
		t.Fatalf("b, while a is limited: %v", err)
	}
	if n := testutil.ToFloat64(s.edge.server.metrics.refused.WithLabelValues(refusedRateLimited)); n != 3 {
		t.Errorf("refused as rate limited: %v, want 3", n)
	}
	if n := s.edge.server.access.limiter.active(time.Now()); n != 2 {
		t.Errorf("%d clients tracked, want 2", n)
	}
}

// TestMaxStreamsPerConn: the edge advertises MaxStreamsPerConn and refuses
// (REFUSED_STREAM) a stream beyond it from a client that ignores it; the
// streams within it stay open.
func TestMaxStreamsPerConn(t *testing.T) {
	t.Parallel()
	s := startSystem(t, Config{MaxStreamsPerConn: 2})
	conn, err := net.Dial("tcp", s.edge.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hdrs bytes.Buffer
	enc := hpack.NewEncoder(&hdrs)
	for i := range 3 {
		hdrs.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/longhaul.v1.Ingest/PushStream"},
			{":authority", s.edge.Addr()}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hdrs.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	advertised := uint32(0)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no RST_STREAM (advertised %d streams): %v", advertised, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
					advertised = v
				}
				_ = fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			if f.StreamID != 5 || f.ErrCode != http2.ErrCodeRefusedStream {
				t.Fatalf("RST_STREAM of stream %d (%v); want stream 5 refused", f.StreamID, f.ErrCode)
			}
			if advertised != 2 {
				t.Fatalf("advertised %d streams per connection, want 2", advertised)
			}
			return
		}
	}
}
