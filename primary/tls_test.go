package primary

import (
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/tlsconf"
)

// With --tls-client-ca the primary takes batches only from edges holding a
// certificate from that CA: one without a certificate, with a certificate
// from another CA, or in plain text is refused before a batch is read. Its
// HTTP endpoints serve TLS and need no client certificate.
func TestPrimaryAcceptsOnlyEdgesWithTheCAsCertificate(t *testing.T) {
	t.Parallel()
	dir, other := t.TempDir(), t.TempDir()
	for _, d := range []string{dir, other} {
		if _, err := tlsconf.WriteDev(d, tlsconf.DevOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	p := func(d, name string) string { return filepath.Join(d, name) }
	srvTLS, err := tlsconf.Flags{Cert: p(dir, "primary.pem"), Key: p(dir, "primary-key.pem"), ClientCA: p(dir, "ca.pem")}.Server()
	if err != nil {
		t.Fatal(err)
	}
	svc, err := Start(context.Background(), Config{DatabaseURL: pgtest.URL(t), Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler), TLS: srvTLS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })

	hello := func(creds credentials.TransportCredentials) error {
		cc, err := grpc.NewClient(svc.Addr(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stream, err := longhaulv1.NewShipperClient(cc).Ship(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&longhaulv1.ShipRequest{Kind: &longhaulv1.ShipRequest_Hello{Hello: &longhaulv1.Hello{EdgeId: "eu/tls"}}}); err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	client := func(ca, certDir string) credentials.TransportCredentials {
		f := tlsconf.Flags{CA: p(ca, "ca.pem")}
		if certDir != "" {
			f.Cert, f.Key = p(certDir, "edge.pem"), p(certDir, "edge-key.pem")
		}
		c, err := f.Client()
		if err != nil {
			t.Fatal(err)
		}
		return credentials.NewTLS(c)
	}
	if err := hello(client(dir, dir)); err != nil {
		t.Fatalf("an edge with the CA's certificate: %v", err)
	}
	for name, creds := range map[string]credentials.TransportCredentials{
		"no client certificate":          client(dir, ""),
		"a certificate from another CA":  client(dir, other),
		"plain text":                     insecure.NewCredentials(),
		"a server CA that is not theirs": client(other, dir),
	} {
		if err := hello(creds); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}

	httpTLS, _ := tlsconf.Flags{CA: p(dir, "ca.pem")}.Client()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: httpTLS}, Timeout: 5 * time.Second}
	resp, err := hc.Get("https://" + svc.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz over TLS: %s", resp.Status)
	}
}
