package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Roles are the roles `longhaul certs` makes a certificate for.
var Roles = []string{"primary", "edge", "scheduler", "checker"}

// DevOptions shape a development CA and its certificates.
type DevOptions struct {
	// Hosts are added to every certificate's names besides localhost,
	// 127.0.0.1, ::1 and the role's name.
	Hosts []string
	// Valid is how long the certificates are valid. Default 1 year.
	Valid time.Duration
	// Force overwrites existing files.
	Force bool
	Now   func() time.Time
}

// WriteDev writes a development CA (ca.pem, ca-key.pem) and, per role, a
// certificate and key (<role>.pem, <role>-key.pem) signed by it, good for
// both server and client authentication, into dir. It refuses to overwrite
// files unless Force.
func WriteDev(dir string, o DevOptions) ([]string, error) {
	if o.Valid <= 0 {
		o.Valid = 365 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	names := []string{"ca.pem", "ca-key.pem"}
	for _, r := range Roles {
		names = append(names, r+".pem", r+"-key.pem")
	}
	if !o.Force {
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
				return nil, fmt.Errorf("%s exists (use --force to overwrite)", filepath.Join(dir, n))
			}
		}
	}
	now := o.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "longhaul development CA", Organization: []string{"longhaul"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(o.Valid), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, MaxPathLenZero: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	var written []string
	write := func(name, typ string, der []byte, mode os.FileMode) error {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
			return err
		}
		written = append(written, p)
		return nil
	}
	caKeyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(write("ca.pem", "CERTIFICATE", caDER, 0o644), write("ca-key.pem", "PRIVATE KEY", caKeyDER, 0o600)); err != nil {
		return nil, err
	}
	for _, role := range Roles {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{CommonName: "longhaul " + role, Organization: []string{"longhaul"}, OrganizationalUnit: []string{role}},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(o.Valid),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		for _, h := range append([]string{"localhost", "127.0.0.1", "::1", role}, o.Hosts...) {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else if h != "" {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := errors.Join(write(role+".pem", "CERTIFICATE", der, 0o644), write(role+"-key.pem", "PRIVATE KEY", keyDER, 0o600)); err != nil {
			return nil, err
		}
	}
	return written, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}
