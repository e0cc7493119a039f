package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/tlsconf"
)

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadTokenFile(t *testing.T) {
	t.Parallel()
	if tok, err := readTokenFile(write(t, "token", "# the CI fleet's\n\n  abcdefghijklmnop0123  \n")); err != nil || tok != "abcdefghijklmnop0123" {
		t.Fatalf("%q %v", tok, err)
	}
	for content, want := range map[string]string{
		"":                          "no token in it",
		"# only a comment\n":        "no token in it",
		"short\n":                   "the token is 5 characters",
		"abcdefghijklmnop0123 ci\n": "more than one field",
	} {
		if _, err := readTokenFile(write(t, "token", content)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want %q", content, err, want)
		}
	}
}

func TestReadGossipKey(t *testing.T) {
	t.Parallel()
	if k, err := readGossipKey(write(t, "key", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")); err != nil || len(k) != 32 {
		t.Fatalf("%d bytes, %v", len(k), err)
	}
	for content, want := range map[string]string{"not base64!": "not base64", "AAAA": "the key is 3 bytes"} {
		if _, err := readGossipKey(write(t, "key", content)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want %q", content, err, want)
		}
	}
}

// TestSecurityFlagErrors: the security flags' mistakes are refused before
// anything serves.
func TestSecurityFlagErrors(t *testing.T) {
	t.Parallel()
	edgeArgs := func(extra ...string) []string {
		return append([]string{"edge", "--region", "eu", "--node-id", "n1", "--data-dir", t.TempDir(),
			"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, extra...)
	}
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"client CA without a certificate": {edgeArgs("--tls-client-ca", "ca.pem"), "--tls-client-ca needs --tls-cert"},
		"negative client rate":            {edgeArgs("--client-rate", "-5"), "--client-rate"},
		"no streams":                      {edgeArgs("--max-streams-per-conn", "0"), "--max-streams-per-conn"},
		"gossip key without gossip":       {edgeArgs("--gossip-key-file", "key"), "--gossip-key-file: needs --gossip-listen"},
		"missing tokens file":             {edgeArgs("--tokens", "/nonexistent/tokens"), "tokens file"},
		"bad tokens file":                 {edgeArgs("--tokens", write(t, "tokens", "abcdefghijklmnop0123\nshort\n")), "line 2"},
		"checker: missing token file":     {[]string{"checker", "--token-file", "/nonexistent/token"}, "--token-file"},
	} {
		code, _, stderr := runCLI(c.args...)
		if code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, %q; want 1 and %q", name, code, stderr, c.want)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe to write and read at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// freeAddr is a loopback address nothing listens on (yet).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestEdgeSecurityFlags: `longhaul edge` with --tls-cert, --tls-key,
// --tls-client-ca and --tokens takes a push from a checker holding the CA's
// certificate and a token, and refuses one without the token.
func TestEdgeSecurityFlags(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, err := tlsconf.WriteDev(certs, tlsconf.DevOptions{}); err != nil {
		t.Fatal(err)
	}
	f := func(name string) string { return filepath.Join(certs, name) }
	const token = "checker-0123456789abcdef"
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	var stderr lockedBuffer
	go func() {
		done <- run(ctx, []string{"edge", "--region", "eu", "--node-id", "n1", "--data-dir", t.TempDir(),
			"--listen", addr, "--http-listen", freeAddr(t), "--primary", freeAddr(t),
			"--tls-cert", f("edge.pem"), "--tls-key", f("edge-key.pem"), "--tls-client-ca", f("ca.pem"), "--tls-ca", f("ca.pem"),
			"--tokens", write(t, "tokens", token+" checkers\n"), "--client-rate", "0", "--max-streams-per-conn", "8"}, &bytes.Buffer{}, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("longhaul edge: exit %d\n%s", code, stderr.String())
		}
	})

	cliTLS, err := tlsconf.Flags{CA: f("ca.pem"), Cert: f("checker.pem"), Key: f("checker-key.pem")}.Client()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cliTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ingest := longhaulv1.NewIngestClient(cc)
	req := &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{{AccountId: "acme", Asset: "a", Kind: "k", Subject: "s",
		Severity: longhaulv1.Severity_LOW, ObservedAt: timestamppb.Now(), ScanId: "scan", Checker: "c"}}}
	push := func(tok string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if tok != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
		}
		_, err := ingest.Push(ctx, req, grpc.WaitForReady(true))
		return err
	}
	if err := push(token); err != nil {
		t.Fatalf("with the certificate and the token: %v\n%s", err, stderr.String())
	}
	if err := push(""); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without the token: %v", err)
	}
}
