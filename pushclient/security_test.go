package pushclient

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/tlsconf"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTokenOverMutualTLS: against an edge that requires a certificate from
// its CA and a token, a client with both pushes; one without the token is
// refused at once (Unauthenticated, not retried); one whose token is scoped
// to another account is refused PermissionDenied naming the insight by its
// index in Push's slice, with what came before it durable.
func TestTokenOverMutualTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := tlsconf.WriteDev(dir, tlsconf.DevOptions{}); err != nil {
		t.Fatal(err)
	}
	f := func(name string) string { return filepath.Join(dir, name) }
	const token, scoped = "checker-0123456789abcdef", "other-0123456789abcdef"
	tokens := writeFile(t, "tokens", token+" checkers\n"+scoped+" other-only accounts=other\n")
	srvTLS, err := tlsconf.Flags{Cert: f("edge.pem"), Key: f("edge-key.pem"), ClientCA: f("ca.pem")}.Server()
	if err != nil {
		t.Fatal(err)
	}
	s := startSystem(t, 1, func(_ int, cfg *edge.Config) {
		cfg.TLS, cfg.Access.TokensFile = srvTLS, tokens
	})
	cliTLS, err := tlsconf.Flags{CA: f("ca.pem"), Cert: f("checker.pem"), Key: f("checker-key.pem")}.Client()
	if err != nil {
		t.Fatal(err)
	}
	tlsDial := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cliTLS))}

	c := newClient(t, Config{Edges: s.addrs(0), DialOptions: tlsDial, Token: token, ChunkInsights: 500, StreamInsights: 1000})
	if res, err := c.Push(context.Background(), makeInsights("scan-tls", "a", 2500)); err != nil || res.Accepted != 2500 {
		t.Fatalf("with a certificate and a token: %+v %v", res, err)
	}
	s.waitRows("scan-tls", 2500)

	none := newClient(t, Config{Edges: s.addrs(0), DialOptions: tlsDial})
	res, err := none.Push(context.Background(), makeInsights("scan-tls", "none", 10))
	if status.Code(err) != codes.Unauthenticated || res.Attempts != 1 {
		t.Fatalf("without a token: %+v %v; want Unauthenticated after one attempt", res, err)
	}

	other := newClient(t, Config{Edges: s.addrs(0), DialOptions: tlsDial, Token: scoped, ChunkInsights: 500, StreamInsights: 1000})
	ins := makeInsights("scan-tls", "scoped", 2000)
	for _, in := range ins {
		in.AccountId = "other"
	}
	ins[1500].AccountId = "acme"
	res, err = other.Push(context.Background(), ins)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "insights[1500].account_id") || res.Accepted != 1000 {
		t.Fatalf("a scoped token writing another account: %+v %v; want PermissionDenied naming insights[1500].account_id after 1000 accepted", res, err)
	}
}

// TestRateLimitedWaitsOnTheSameEdge: an edge that finds the client over
// its rate is not left for another: the client waits for the hints and
// sends the rest of each stream to it again, never what it took already
// (the WAL holds each insight once). The token goes in plain text to the
// loopback edge.
func TestRateLimitedWaitsOnTheSameEdge(t *testing.T) {
	t.Parallel()
	const token = "checker-0123456789abcdef"
	tokens := writeFile(t, "tokens", token+"\n")
	s := startSystem(t, 2, func(i int, cfg *edge.Config) {
		cfg.Access.TokensFile = tokens
		if i == 0 {
			cfg.Access.ClientRate, cfg.Access.ClientBurst = 1000, 500
		}
	})
	c := newClient(t, Config{Edges: s.addrs(0, 1), Token: token, ChunkInsights: 250, StreamInsights: 1000})
	res, err := c.Push(context.Background(), makeInsights("scan-rate", "r", 2000))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Edges, s.addrs(0)) || res.Accepted != 2000 {
		t.Fatalf("%+v; want all 2000 on the first edge", res)
	}
	if n := counter(c.metrics.rateLimited, s.addrs(0)[0]); n == 0 {
		t.Fatal("the edge never limited the client")
	}
	if n := counter(c.metrics.failovers, s.addrs(0)[0], codes.ResourceExhausted.String()); n != 0 {
		t.Fatalf("%d failovers", n)
	}
	if st := s.edges[0].svc.WAL().Stats(); st.AppendedRecords != 2000 {
		t.Fatalf("the WAL took %d insights, want each of the 2000 once", st.AppendedRecords)
	}
	s.waitRows("scan-rate", 2000)
}

// TestTokenNotSentInPlainText: the client sends its token in plain text
// only to loopback addresses (previous test), unless AllowInsecureToken:
// to another address the call fails at once, and the edge sees nothing.
func TestTokenNotSentInPlainText(t *testing.T) {
	t.Parallel()
	const token = "checker-0123456789abcdef"
	s := startSystem(t, 1, func(_ int, cfg *edge.Config) { cfg.Access.TokensFile = writeFile(t, "tokens", token+"\n") })
	// The edge, as if it were another machine: the address the client
	// dials (its authority) is not a loopback one.
	redirect := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", s.addrs(0)[0])
	})
	far := []string{"passthrough:///edge.example:7300"}
	c := newClient(t, Config{Edges: far, DialOptions: []grpc.DialOption{redirect}, Token: token})
	res, err := c.Push(context.Background(), makeInsights("scan-plain", "p", 10))
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "not sending the token in plain text to edge.example") || res.Attempts != 1 {
		t.Fatalf("%+v %v; want Unauthenticated from the client", res, err)
	}
	if st := s.edges[0].svc.WAL().Stats(); st.Appends != 0 {
		t.Fatal("the edge took the push")
	}
	ok := newClient(t, Config{Edges: far, DialOptions: []grpc.DialOption{redirect}, Token: token, AllowInsecureToken: true})
	if _, err := ok.Push(context.Background(), makeInsights("scan-plain", "p", 10)); err != nil {
		t.Fatalf("AllowInsecureToken: %v", err)
	}
	if _, err := New(Config{Edges: far, Token: "two words"}); err == nil || !strings.Contains(err.Error(), "Token must not contain spaces") {
		t.Fatalf("a token with a space: %v", err)
	}
}
