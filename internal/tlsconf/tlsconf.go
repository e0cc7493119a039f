// Package tlsconf turns longhaul's TLS flags into tls.Configs, the same on
// every role, and makes development certificates (`longhaul certs`).
//
// Servers take --tls-cert and --tls-key, and --tls-client-ca to require
// client certificates signed by that CA (mutual TLS). Clients of another
// role take --tls-ca (the CA that signed the server's certificate) and, for
// mutual TLS, --tls-cert and --tls-key. Certificate files are read again
// when they change on disk, so rotating them needs no restart.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"
)

// Flags are the TLS flags of one role.
type Flags struct {
	Cert, Key string // this process's certificate and key (server, and client for mTLS)
	ClientCA  string // servers: require client certificates signed by this CA
	CA        string // clients: the CA that signed the servers' certificates
}

// Register adds the flags: server ones when server, client ones when client.
func (f *Flags) Register(fs *flag.FlagSet, server, client bool) {
	fs.StringVar(&f.Cert, "tls-cert", "", "PEM certificate of this process (enables TLS on its listeners; presented to servers for mutual TLS)")
	fs.StringVar(&f.Key, "tls-key", "", "PEM private key of --tls-cert")
	if server {
		fs.StringVar(&f.ClientCA, "tls-client-ca", "", "PEM CA: require client certificates signed by it (mutual TLS)")
	}
	if client {
		fs.StringVar(&f.CA, "tls-ca", "", "PEM CA that signed the servers' certificates this process connects to (enables TLS to them)")
	}
}

// Enabled reports whether the listeners serve TLS.
func (f Flags) Enabled() bool { return f.Cert != "" }

func (f Flags) check() error {
	if (f.Cert == "") != (f.Key == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if f.ClientCA != "" && f.Cert == "" {
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key")
	}
	return nil
}

// Server returns the listeners' TLS configuration, or nil when TLS is off.
func (f Flags) Server() (*tls.Config, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	if f.Cert == "" {
		return nil, nil
	}
	kp, err := newKeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.get() }}
	if f.ClientCA != "" {
		pool, err := LoadCA(f.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// Client returns the TLS configuration for connecting to another role, or
// nil when neither --tls-ca nor a certificate is given.
func (f Flags) Client() (*tls.Config, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	if f.CA == "" && f.Cert == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pool, err := LoadCA(f.CA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		c.RootCAs = pool
	}
	if f.Cert != "" {
		kp, err := newKeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, err
		}
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.get() }
	}
	return c, nil
}

// LoadCA reads a PEM file of one or more CA certificates.
func LoadCA(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}

// keyPair is a certificate read again when its files change.
type keyPair struct {
	cert, key string
	mu        sync.Mutex
	loaded    *tls.Certificate
	mtime     time.Time
	checked   time.Time
}

func newKeyPair(cert, key string) (*keyPair, error) {
	kp := &keyPair{cert: cert, key: key}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	return kp, nil
}

// get returns the certificate, reloading it (at most once a second) when a
// file's modification time changed. A reload that fails keeps the old one.
func (kp *keyPair) get() (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if kp.loaded != nil && time.Since(kp.checked) < time.Second {
		return kp.loaded, nil
	}
	kp.checked = time.Now()
	mtime := latestMtime(kp.cert, kp.key)
	if kp.loaded != nil && !mtime.After(kp.mtime) {
		return kp.loaded, nil
	}
	c, err := tls.LoadX509KeyPair(kp.cert, kp.key)
	if err != nil {
		if kp.loaded != nil {
			return kp.loaded, nil
		}
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	kp.loaded, kp.mtime = &c, mtime
	return kp.loaded, nil
}

func latestMtime(paths ...string) time.Time {
	var t time.Time
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.ModTime().After(t) {
			t = st.ModTime()
		}
	}
	return t
}
