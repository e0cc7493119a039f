package checks

import (
	"bytes"
	"context"
	"crypto/dsa" //lint:ignore SA1019 only to recognise DSA keys, which are weak by definition
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// Kinds of the tls check. The subject of each is the scanned "host:port".
const (
	// KindTLSExpiry: the certificate has expired (critical), or is not yet
	// valid (high), or expires within 14 days (high) or 30 days (moderate).
	KindTLSExpiry = "tls.expiry"
	// KindTLSHostname: the certificate is not valid for the host (high).
	KindTLSHostname = "tls.hostname"
	// KindTLSUntrusted: the chain does not lead to a trusted root (high).
	// A self-signed certificate is reported as KindTLSSelfSigned instead.
	KindTLSUntrusted = "tls.untrusted"
	// KindTLSSelfSigned: the certificate signs itself: high when no root
	// vouches for it, low when it is one of the trusted roots itself.
	KindTLSSelfSigned = "tls.self-signed"
	// KindTLSOldProtocol: the server accepts TLS 1.0 or 1.1 (moderate).
	KindTLSOldProtocol = "tls.old-protocol"
	// KindTLSWeakKey: the certificate's key is RSA under 2048 bits, ECDSA
	// under 256 bits, or DSA (moderate).
	KindTLSWeakKey = "tls.weak-key"
)

// Thresholds of KindTLSExpiry and KindTLSWeakKey.
const (
	tlsExpiryHigh     = 14 * 24 * time.Hour
	tlsExpiryModerate = 30 * 24 * time.Hour
	tlsMinRSABits     = 2048
	tlsMinECDSABits   = 256
)

// TLS is the check of a TLS endpoint's certificate and protocol versions.
//
// The asset is "host", "host:port" or "https://host[:port]/…"; the port
// defaults to 443. The check makes one handshake that accepts any
// certificate and any version from TLS 1.0 up, so it can inspect what it
// gets, and verifies the chain itself against Options.RootCAs at
// Options.Now. Then it probes, with one or two more handshakes limited to
// them, whether the server still accepts TLS 1.1 and 1.0.
//
// A host it cannot connect to, or that does not complete the first
// handshake, fails the scan: that is not a finding.
type TLS struct {
	opts Options
}

// NewTLS returns the tls check.
func NewTLS(opts Options) *TLS {
	return &TLS{opts: opts.withDefaults()}
}

// Name returns "tls".
func (*TLS) Name() string { return NameTLS }

// Kinds returns the kinds the tls check reports.
func (*TLS) Kinds() []string {
	return []string{KindTLSExpiry, KindTLSHostname, KindTLSUntrusted, KindTLSSelfSigned, KindTLSOldProtocol, KindTLSWeakKey}
}

// Run scans the TLS endpoint t.Asset.
func (c *TLS) Run(ctx context.Context, t Target, report func(Finding)) error {
	host, port, err := parseTLSAsset(t.Asset)
	if err != nil {
		return fmt.Errorf("checks: tls: %w", err)
	}
	addr := net.JoinHostPort(host, port)
	state, err := c.handshake(ctx, addr, host, tls.VersionTLS10, tls.VersionTLS13)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return fmt.Errorf("checks: tls: %s: %w", addr, err)
	}
	if len(state.PeerCertificates) == 0 {
		return fmt.Errorf("checks: tls: %s: the server sent no certificate", addr)
	}
	old, err := c.oldVersions(ctx, addr, host, state.Version)
	if err != nil {
		return err
	}
	for _, f := range c.judge(host, addr, state, old) {
		report(f)
	}
	return nil
}

// oldVersions returns the versions older than TLS 1.2 that the server at
// addr accepts, oldest first, given the version it chose in the first
// handshake. It probes with handshakes limited to them; a probe that fails
// for any reason but the end of ctx means the server refused the version.
func (c *TLS) oldVersions(ctx context.Context, addr, host string, chosen uint16) ([]uint16, error) {
	var old []uint16
	probe := func(lo, hi uint16) {
		if st, err := c.handshake(ctx, addr, host, lo, hi); err == nil {
			old = append([]uint16{st.Version}, old...)
		}
	}
	if chosen < tls.VersionTLS12 {
		old = append(old, chosen)
	} else {
		probe(tls.VersionTLS10, tls.VersionTLS11)
	}
	// The server chose the newest it accepts: it may accept TLS 1.0 too.
	if len(old) == 1 && old[0] == tls.VersionTLS11 {
		probe(tls.VersionTLS10, tls.VersionTLS10)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return old, nil
}

// handshake connects to addr and completes a TLS handshake that accepts any
// certificate and the versions from minVersion to maxVersion, offering
// every cipher suite Go knows (insecure ones included, to reach old
// servers). Each handshake has its own Options.Timeout.
func (c *TLS) handshake(ctx context.Context, addr, host string, minVersion, maxVersion uint16) (*tls.ConnectionState, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	raw, err := c.opts.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	var suites []uint16
	for _, s := range tls.CipherSuites() {
		suites = append(suites, s.ID)
	}
	for _, s := range tls.InsecureCipherSuites() {
		suites = append(suites, s.ID)
	}
	conn := tls.Client(raw, &tls.Config{
		ServerName: host,
		// The certificate is what this check inspects; it verifies the
		// chain itself in judge, and sends nothing over the connection.
		InsecureSkipVerify: true,
		MinVersion:         minVersion,
		MaxVersion:         maxVersion,
		CipherSuites:       suites,
	})
	defer conn.Close()
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("handshake (%s to %s): %w", tls.VersionName(minVersion), tls.VersionName(maxVersion), err)
	}
	state := conn.ConnectionState()
	return &state, nil
}

// judge returns the findings about the endpoint addr of host, given the
// first handshake's state and the old versions the server accepts.
func (c *TLS) judge(host, addr string, state *tls.ConnectionState, old []uint16) []Finding {
	leaf := state.PeerCertificates[0]
	now := c.opts.Now()
	subject := cleanText(addr, maxSubjectBytes)
	details := func(extra map[string]any) map[string]any {
		d := map[string]any{
			"not_before": leaf.NotBefore.UTC().Format(time.RFC3339),
			"not_after":  leaf.NotAfter.UTC().Format(time.RFC3339),
			"issuer":     cleanText(leaf.Issuer.String(), maxTextBytes),
			"subject_cn": cleanText(leaf.Subject.CommonName, maxTextBytes),
			"sans":       cleanList(certNames(leaf)),
			"version":    tls.VersionName(state.Version),
		}
		for k, v := range extra {
			d[k] = v
		}
		return d
	}
	var out []Finding
	add := func(kind string, sev longhaulv1.Severity, extra map[string]any) {
		out = append(out, Finding{Kind: kind, Subject: subject, Severity: sev, Details: details(extra)})
	}

	// Validity period.
	left := leaf.NotAfter.Sub(now)
	days := int(math.Floor(left.Hours() / 24))
	switch {
	case now.After(leaf.NotAfter):
		add(KindTLSExpiry, longhaulv1.Severity_CRITICAL, map[string]any{"problem": "expired", "days_left": days})
	case now.Before(leaf.NotBefore):
		add(KindTLSExpiry, longhaulv1.Severity_HIGH, map[string]any{"problem": "not yet valid", "days_left": days})
	case left < tlsExpiryHigh:
		add(KindTLSExpiry, longhaulv1.Severity_HIGH, map[string]any{"problem": "expires soon", "days_left": days})
	case left < tlsExpiryModerate:
		add(KindTLSExpiry, longhaulv1.Severity_MODERATE, map[string]any{"problem": "expires soon", "days_left": days})
	}

	// Name.
	if err := leaf.VerifyHostname(host); err != nil {
		add(KindTLSHostname, longhaulv1.Severity_HIGH, map[string]any{
			"host": cleanText(host, maxTextBytes), "error": cleanText(err.Error(), maxTextBytes)})
	}

	// Chain.
	trustErr := c.verify(leaf, state.PeerCertificates[1:], now)
	selfSigned := bytes.Equal(leaf.RawIssuer, leaf.RawSubject) &&
		leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil
	switch {
	case selfSigned && trustErr != nil:
		add(KindTLSSelfSigned, longhaulv1.Severity_HIGH, map[string]any{"trusted": false})
	case selfSigned:
		add(KindTLSSelfSigned, longhaulv1.Severity_LOW, map[string]any{"trusted": true})
	case trustErr != nil:
		add(KindTLSUntrusted, longhaulv1.Severity_HIGH, map[string]any{"error": cleanText(trustErr.Error(), maxTextBytes)})
	}

	// Protocol.
	if len(old) > 0 {
		accepted := make([]any, len(old))
		for i, v := range old {
			accepted[i] = tls.VersionName(v)
		}
		add(KindTLSOldProtocol, longhaulv1.Severity_MODERATE, map[string]any{"accepted": accepted})
	}

	// Key.
	if alg, bits, weak := weakKey(leaf); weak {
		add(KindTLSWeakKey, longhaulv1.Severity_MODERATE, map[string]any{"key": alg, "bits": bits})
	}
	return out
}

// verify checks that leaf chains to a trusted root through intermediates,
// for server authentication, at now. A leaf outside its own validity period
// is judged at the nearest moment inside it instead: KindTLSExpiry reports
// that, and the chain may still be sound.
func (c *TLS) verify(leaf *x509.Certificate, intermediates []*x509.Certificate, now time.Time) error {
	pool := x509.NewCertPool()
	for _, ic := range intermediates {
		pool.AddCert(ic)
	}
	at := now
	if at.After(leaf.NotAfter) {
		at = leaf.NotAfter
	} else if at.Before(leaf.NotBefore) {
		at = leaf.NotBefore
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         c.opts.RootCAs,
		Intermediates: pool,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) && inv.Reason == x509.Expired {
		return fmt.Errorf("a certificate of the chain is not valid at %s: %w", now.UTC().Format(time.RFC3339), err)
	}
	return err
}

// certNames returns the names a certificate is valid for.
func certNames(c *x509.Certificate) []string {
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

// weakKey says whether c's public key is too weak, and what it is.
func weakKey(c *x509.Certificate) (alg string, bits int, weak bool) {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		bits = k.N.BitLen()
		return "RSA", bits, bits < tlsMinRSABits
	case *ecdsa.PublicKey:
		bits = k.Curve.Params().BitSize
		return "ECDSA", bits, bits < tlsMinECDSABits
	case *dsa.PublicKey:
		return "DSA", k.P.BitLen(), true
	}
	return c.PublicKeyAlgorithm.String(), 0, false
}

// parseTLSAsset returns the host (lower case, without brackets or a final
// dot) and port of "host", "host:port" or "https://host[:port]/…".
func parseTLSAsset(asset string) (host, port string, err error) {
	if strings.Contains(asset, "://") {
		u, err := url.Parse(asset)
		if err != nil {
			return "", "", fmt.Errorf("asset %q: %w", asset, err)
		}
		if u.Scheme != "https" {
			return "", "", fmt.Errorf("asset %q: scheme %q, want https or none", asset, u.Scheme)
		}
		host, port = u.Hostname(), u.Port()
	} else if h, p, err := net.SplitHostPort(asset); err == nil {
		host, port = h, p
	} else {
		// No port: "example.com", "[::1]" or "::1".
		host = strings.TrimSuffix(strings.TrimPrefix(asset, "["), "]")
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" {
		return "", "", fmt.Errorf("asset %q: no host", asset)
	}
	if port == "" {
		port = "443"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("asset %q: port %q is not a number from 1 to 65535", asset, port)
	}
	return host, port, nil
}
