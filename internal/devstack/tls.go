package devstack

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/longhaul/longhaul/internal/tlsconf"
)

// edgeServesTLS says whether edges serve their listeners over TLS when the
// stack runs with TLS: the checkers then dial the edges with
// certs.checkerToEdge, and the printed commands use https, --cacert and
// --tls-ca.
const edgeServesTLS = true

// certs are the stack's TLS configurations, made from development
// certificates (tlsconf.WriteDev) in one directory. The nil *certs is TLS
// off: every method returns nil.
type certs struct {
	dir string
	// primaryServer requires client certificates (mutual TLS): only edges
	// holding one from the CA may ship. schedulerServer serves its HTTP API.
	primaryServer, schedulerServer, edgeServer *tls.Config
	// edgeToPrimary presents the edge's certificate to the primary;
	// checkerToEdge trusts the CA (and presents the checker's certificate).
	edgeToPrimary, checkerToEdge *tls.Config
}

// makeCerts writes a development CA and a certificate per role into dir,
// unless dir holds them already (a Dir kept from an earlier run), and
// loads the configurations.
func makeCerts(dir string) (*certs, error) {
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); errors.Is(err, fs.ErrNotExist) {
		if _, err := tlsconf.WriteDev(dir, tlsconf.DevOptions{}); err != nil {
			return nil, fmt.Errorf("devstack: certificates: %w", err)
		}
	}
	role := func(r string) (string, string) {
		return filepath.Join(dir, r+".pem"), filepath.Join(dir, r+"-key.pem")
	}
	ca := filepath.Join(dir, "ca.pem")
	c := &certs{dir: dir}
	var err error
	server := func(r, clientCA string) *tls.Config {
		if err != nil {
			return nil
		}
		cert, key := role(r)
		var cfg *tls.Config
		cfg, err = tlsconf.Flags{Cert: cert, Key: key, ClientCA: clientCA}.Server()
		return cfg
	}
	client := func(r string) *tls.Config {
		if err != nil {
			return nil
		}
		cert, key := role(r)
		var cfg *tls.Config
		cfg, err = tlsconf.Flags{Cert: cert, Key: key, CA: ca}.Client()
		return cfg
	}
	c.primaryServer = server("primary", ca)
	c.schedulerServer = server("scheduler", "")
	c.edgeServer = server("edge", "")
	c.edgeToPrimary = client("edge")
	c.checkerToEdge = client("checker")
	if err != nil {
		return nil, fmt.Errorf("devstack: certificates in %s: %w", dir, err)
	}
	return c, nil
}

// CA is the path of the CA certificate, "" when TLS is off.
func (c *certs) CA() string {
	if c == nil {
		return ""
	}
	return filepath.Join(c.dir, "ca.pem")
}

func (c *certs) primary() *tls.Config {
	if c == nil {
		return nil
	}
	return c.primaryServer
}

func (c *certs) scheduler() *tls.Config {
	if c == nil {
		return nil
	}
	return c.schedulerServer
}

// shipDial are the edges' dial options to the primary.
func (c *certs) shipDial() []grpc.DialOption {
	if c == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(c.edgeToPrimary))}
}

// pushDial are the checkers' dial options to the edges (push client and
// picker).
func (c *certs) pushDial() []grpc.DialOption {
	if c == nil || !edgeServesTLS {
		return nil
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(c.checkerToEdge))}
}

// edge is the edges' listeners' TLS configuration.
func (c *certs) edge() *tls.Config {
	if c == nil {
		return nil
	}
	return c.edgeServer
}

// peer is the client configuration an edge's status page uses to ask the
// other edges.
func (c *certs) peer() *tls.Config {
	if c == nil {
		return nil
	}
	return c.checkerToEdge
}

// edgeTLS reports whether the edges' listeners serve TLS.
func (c *certs) edgeTLS() bool { return edgeServesTLS && c.edge() != nil }
