package checks

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// startTLSServer starts an HTTPS server on loopback with cfg and returns its
// address. It is closed when the test ends.
func startTLSServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = cfg
	// Refused probes are expected; they are not worth a log line.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// dialTo returns a DialContext that connects to addr whatever address it is
// asked for, so tests can scan made-up host names.
func dialTo(addr string) func(ctx context.Context, network, _ string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// TestTLS scans servers with certificates and protocol versions that make
// each finding, and one that makes none, and checks exactly what is found.
func TestTLS(t *testing.T) {
	t.Parallel()
	root := newTestCA(t, "Test Root", nil)
	inter := newTestCA(t, "Test Intermediate", root)
	stranger := newTestCA(t, "Someone Else's Root", nil)
	day := 24 * time.Hour

	type want map[string]longhaulv1.Severity
	for _, tc := range []struct {
		name  string
		ca    *testCA // nil: self-signed
		spec  leafSpec
		min   uint16 // server MinVersion, default TLS 1.2
		max   uint16 // server MaxVersion, default none
		asset string // default "good.test"
		trust bool   // add the leaf itself to the roots
		want  want
	}{
		{name: "good", ca: root, spec: leafSpec{names: []string{"good.test"}}, want: want{}},
		{name: "url asset", ca: root, spec: leafSpec{names: []string{"good.test"}}, asset: "https://GOOD.test./some/path?q=1", want: want{}},
		{name: "intermediate", ca: inter, spec: leafSpec{names: []string{"good.test"}, chain: []*testCA{inter}}, want: want{}},
		{name: "missing intermediate", ca: inter, spec: leafSpec{names: []string{"good.test"}}, want: want{KindTLSUntrusted: longhaulv1.Severity_HIGH}},
		{name: "expired", ca: root, spec: leafSpec{names: []string{"good.test"}, notAfter: testNow.Add(-day)},
			want: want{KindTLSExpiry: longhaulv1.Severity_CRITICAL}},
		{name: "expires in 10 days", ca: root, spec: leafSpec{names: []string{"good.test"}, notAfter: testNow.Add(10 * day)},
			want: want{KindTLSExpiry: longhaulv1.Severity_HIGH}},
		{name: "expires in 20 days", ca: root, spec: leafSpec{names: []string{"good.test"}, notAfter: testNow.Add(20 * day)},
			want: want{KindTLSExpiry: longhaulv1.Severity_MODERATE}},
		{name: "expires in 31 days", ca: root, spec: leafSpec{names: []string{"good.test"}, notAfter: testNow.Add(31 * day)}, want: want{}},
		{name: "not yet valid", ca: root, spec: leafSpec{names: []string{"good.test"}, notBefore: testNow.Add(day)},
			want: want{KindTLSExpiry: longhaulv1.Severity_HIGH}},
		{name: "wrong host", ca: root, spec: leafSpec{names: []string{"other.test"}},
			want: want{KindTLSHostname: longhaulv1.Severity_HIGH}},
		{name: "unknown CA", ca: stranger, spec: leafSpec{names: []string{"good.test"}},
			want: want{KindTLSUntrusted: longhaulv1.Severity_HIGH}},
		{name: "self-signed", spec: leafSpec{names: []string{"good.test"}},
			want: want{KindTLSSelfSigned: longhaulv1.Severity_HIGH}},
		{name: "self-signed and trusted", spec: leafSpec{names: []string{"good.test"}}, trust: true,
			want: want{KindTLSSelfSigned: longhaulv1.Severity_LOW}},
		{name: "TLS 1.0 allowed", ca: root, spec: leafSpec{names: []string{"good.test"}}, min: tls.VersionTLS10,
			want: want{KindTLSOldProtocol: longhaulv1.Severity_MODERATE}},
		{name: "TLS 1.1 only", ca: root, spec: leafSpec{names: []string{"good.test"}}, min: tls.VersionTLS11, max: tls.VersionTLS11,
			want: want{KindTLSOldProtocol: longhaulv1.Severity_MODERATE}},
		{name: "TLS 1.3 only", ca: root, spec: leafSpec{names: []string{"good.test"}}, min: tls.VersionTLS13, want: want{}},
		{name: "RSA 1024", ca: root, spec: leafSpec{names: []string{"good.test"}, key: rsaKey(t, 1024)},
			want: want{KindTLSWeakKey: longhaulv1.Severity_MODERATE}},
		{name: "RSA 2048", ca: root, spec: leafSpec{names: []string{"good.test"}, key: rsaKey(t, 2048)}, want: want{}},
		{name: "IP address", ca: root, spec: leafSpec{names: []string{"127.0.0.1"}}, asset: "127.0.0.1:8443", want: want{}},
		{name: "everything wrong", spec: leafSpec{names: []string{"other.test"}, notAfter: testNow.Add(-day), key: rsaKey(t, 1024)}, min: tls.VersionTLS10,
			want: want{
				KindTLSExpiry: longhaulv1.Severity_CRITICAL, KindTLSHostname: longhaulv1.Severity_HIGH,
				KindTLSSelfSigned: longhaulv1.Severity_HIGH, KindTLSOldProtocol: longhaulv1.Severity_MODERATE,
				KindTLSWeakKey: longhaulv1.Severity_MODERATE,
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cert := tc.ca.issue(t, tc.spec)
			cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
			if tc.min != 0 {
				cfg.MinVersion = tc.min
			}
			cfg.MaxVersion = tc.max
			addr := startTLSServer(t, cfg)

			roots := root.pool()
			if tc.trust {
				roots.AddCert(cert.Leaf)
			}
			asset := tc.asset
			if asset == "" {
				asset = "good.test"
			}
			c := NewTLS(Options{RootCAs: roots, Now: func() time.Time { return testNow }, DialContext: dialTo(addr), Timeout: 5 * time.Second})
			fs, err := runCheck(t.Context(), t, c, Target{AccountID: "a", Asset: asset, ScanID: "j/tls"})
			if err != nil {
				t.Fatal(err)
			}
			got := severities(t, fs)
			if len(got) != len(tc.want) {
				t.Errorf("found %v, want %v", got, tc.want)
			}
			for kind, sev := range tc.want {
				if got[kind] != sev {
					t.Errorf("found %v, want %v", got, tc.want)
					break
				}
			}
			host, port, _ := parseTLSAsset(asset)
			for _, f := range fs {
				if f.Subject != net.JoinHostPort(host, port) {
					t.Errorf("%s: subject %q, want %s:%s", f.Kind, f.Subject, host, port)
				}
				for _, k := range []string{"not_after", "issuer", "subject_cn", "sans", "version"} {
					if _, ok := f.Details[k]; !ok {
						t.Errorf("%s: details %v lack %s", f.Kind, f.Details, k)
					}
				}
				t.Logf("%s %s %q %v", f.Kind, f.Severity, f.Subject, f.Details)
			}
		})
	}
}

// TestTLSDetails checks what the findings say beyond their kind.
func TestTLSDetails(t *testing.T) {
	t.Parallel()
	root := newTestCA(t, "Test Root", nil)
	cert := root.issue(t, leafSpec{names: []string{"good.test", "www.good.test"}, notAfter: testNow.Add(-48 * time.Hour)})
	addr := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS12})
	c := NewTLS(Options{RootCAs: root.pool(), Now: func() time.Time { return testNow }, DialContext: dialTo(addr)})
	fs, err := runCheck(t.Context(), t, c, Target{AccountID: "a", Asset: "good.test:8443"})
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string]Finding{}
	for _, f := range fs {
		byKind[f.Kind] = f
	}
	exp := byKind[KindTLSExpiry].Details
	if exp["problem"] != "expired" || exp["days_left"] != -2 || exp["not_after"] != testNow.Add(-48*time.Hour).Format(time.RFC3339) ||
		exp["subject_cn"] != "good.test" || exp["version"] != "TLS 1.2" || !strings.Contains(exp["issuer"].(string), "Test Root") {
		t.Errorf("expiry details: %v", exp)
	}
	if sans := exp["sans"].([]any); len(sans) != 2 || sans[0] != "good.test" || sans[1] != "www.good.test" {
		t.Errorf("sans: %v", sans)
	}
	if got := byKind[KindTLSOldProtocol].Details["accepted"]; !reflect.DeepEqual(got, []any{"TLS 1.0", "TLS 1.1"}) {
		t.Errorf("old protocols accepted: %v, want TLS 1.0 and 1.1", got)
	}
	if byKind[KindTLSExpiry].Subject != "good.test:8443" {
		t.Errorf("subject %q", byKind[KindTLSExpiry].Subject)
	}
}

// TestTLSFailures checks that what is not a TLS endpoint fails the scan
// rather than making findings: a closed port, a plain HTTP server, a server
// that never answers the handshake (within the timeout), a cancelled scan,
// and an asset that is not one.
func TestTLSFailures(t *testing.T) {
	t.Parallel()
	opts := Options{Now: func() time.Time { return testNow }, Timeout: 200 * time.Millisecond}

	t.Run("closed port", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, err = runCheck(t.Context(), t, NewTLS(opts), Target{Asset: addr})
		if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "dial") {
			t.Fatalf("closed port: %v, want a dial error naming %s", err, addr)
		}
	})
	t.Run("plain HTTP", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Config.ErrorLog = log.New(io.Discard, "", 0)
		t.Cleanup(srv.Close)
		_, err := runCheck(t.Context(), t, NewTLS(opts), Target{Asset: srv.Listener.Addr().String()})
		if err == nil || !strings.Contains(err.Error(), "handshake") {
			t.Fatalf("plain HTTP: %v, want a handshake error", err)
		}
	})
	t.Run("silent server", func(t *testing.T) {
		t.Parallel()
		addr := silentServer(t)
		_, err := runCheck(t.Context(), t, NewTLS(opts), Target{Asset: addr})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("silent server: %v, want a deadline error", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		addr := silentServer(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := runCheck(ctx, t, NewTLS(Options{}), Target{Asset: addr}); err != context.Canceled {
			t.Fatalf("cancelled: %v, want context.Canceled", err)
		}
	})
	t.Run("bad asset", func(t *testing.T) {
		t.Parallel()
		for _, asset := range []string{"", "http://example.com/", "example.com:0", "example.com:https", "https://:443/", "[::1"} {
			if _, err := runCheck(t.Context(), t, NewTLS(opts), Target{Asset: asset}); err == nil {
				t.Errorf("asset %q: no error", asset)
			}
		}
	})
}

// silentServer accepts connections on loopback and never writes to them.
// It stops, closing what it accepted, when the test ends.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func TestParseTLSAsset(t *testing.T) {
	t.Parallel()
	for asset, want := range map[string]string{
		"example.com":                "example.com:443",
		"Example.COM.":               "example.com:443",
		"example.com:8443":           "example.com:8443",
		"https://example.com":        "example.com:443",
		"https://example.com:444/a/": "example.com:444",
		"https://user@example.com/":  "example.com:443",
		"10.0.0.1":                   "10.0.0.1:443",
		"10.0.0.1:444":               "10.0.0.1:444",
		"::1":                        "[::1]:443",
		"[::1]":                      "[::1]:443",
		"[::1]:444":                  "[::1]:444",
		"https://[::1]:444/":         "[::1]:444",
	} {
		host, port, err := parseTLSAsset(asset)
		if got := net.JoinHostPort(host, port); err != nil || got != want {
			t.Errorf("parseTLSAsset(%q) = %s, %v, want %s", asset, got, err, want)
		}
	}
}
