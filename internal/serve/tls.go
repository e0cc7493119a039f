package serve

import (
	"crypto/tls"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// GRPCTLS returns the server option serving gRPC over TLS with cfg (its
// ClientAuth decides whether client certificates are required), or nil
// when cfg is nil.
func GRPCTLS(cfg *tls.Config) []grpc.ServerOption {
	if cfg == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(cfg))}
}

// HTTPListener wraps ln in TLS for the HTTP endpoints when cfg is not nil.
// A client certificate is verified when one is presented but not required,
// so health checks and metric scrapers need none even where the gRPC
// listener demands one.
func HTTPListener(ln net.Listener, cfg *tls.Config) net.Listener {
	if cfg == nil {
		return ln
	}
	c := cfg.Clone()
	c.NextProtos = []string{"http/1.1"}
	if c.ClientAuth == tls.RequireAndVerifyClientCert {
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tls.NewListener(ln, c)
}
