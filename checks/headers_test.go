package checks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// headerServer starts an HTTPS (or, if plain, HTTP) server on loopback
// answering with h, and returns it with headers-check options that trust
// it. It is closed when the test ends.
func headerServer(t *testing.T, plain bool, h http.Handler) (*httptest.Server, Options) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if plain {
		srv.Start()
	} else {
		srv.StartTLS()
	}
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	if !plain {
		roots.AddCert(srv.Certificate())
	}
	return srv, Options{RootCAs: roots, Timeout: 5 * time.Second}
}

// withHeaders answers every request with hdr (and a short body).
func withHeaders(hdr map[string][]string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		for k, vs := range hdr {
			w.Header()[http.CanonicalHeaderKey(k)] = vs
		}
		io.WriteString(w, "<html>hello</html>")
	})
}

// good is a full set of good headers.
var good = map[string][]string{
	"Strict-Transport-Security": {"max-age=31536000; includeSubDomains"},
	"Content-Security-Policy":   {"default-src 'self'; frame-ancestors 'none'"},
	"X-Content-Type-Options":    {"nosniff"},
	"Referrer-Policy":           {"strict-origin-when-cross-origin"},
	"Server":                    {"nginx"},
}

// goodBut returns good with some headers replaced, or removed if nil.
func goodBut(changes map[string][]string) map[string][]string {
	out := map[string][]string{}
	for k, v := range good {
		out[k] = v
	}
	for k, v := range changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// problem is what a headers finding says: its severity and problem.
type problem struct {
	sev  longhaulv1.Severity
	text string
}

// TestHeaders scans servers with good, missing and weak headers and checks
// exactly what is found.
func TestHeaders(t *testing.T) {
	t.Parallel()
	const (
		low      = longhaulv1.Severity_LOW
		moderate = longhaulv1.Severity_MODERATE
	)
	type want map[string]problem
	for _, tc := range []struct {
		name  string
		plain bool
		hdr   map[string][]string
		want  want
	}{
		{name: "good", hdr: good, want: want{}},
		{name: "good with X-Frame-Options", hdr: goodBut(map[string][]string{
			"Content-Security-Policy": {"default-src 'self'"}, "X-Frame-Options": {"SAMEORIGIN"}}), want: want{}},
		{name: "none", hdr: nil, want: want{
			KindHeadersHSTS:               {moderate, "missing"},
			KindHeadersCSP:                {moderate, "missing"},
			KindHeadersContentTypeOptions: {low, "missing"},
			KindHeadersClickjacking:       {moderate, "no X-Frame-Options or CSP frame-ancestors"},
			KindHeadersReferrerPolicy:     {low, "missing"},
		}},
		{name: "none over HTTP", plain: true, hdr: nil, want: want{
			KindHeadersCSP:                {moderate, "missing"},
			KindHeadersContentTypeOptions: {low, "missing"},
			KindHeadersClickjacking:       {moderate, "no X-Frame-Options or CSP frame-ancestors"},
			KindHeadersReferrerPolicy:     {low, "missing"},
		}},
		{name: "weak", hdr: map[string][]string{
			"Strict-Transport-Security": {"max-age=86400"},
			"Content-Security-Policy":   {"script-src 'self' 'unsafe-inline'"},
			"X-Content-Type-Options":    {"sniff"},
			"X-Frame-Options":           {"ALLOW-FROM https://example.net/"},
			"Referrer-Policy":           {"unsafe-url"},
			"Server":                    {"Apache/2.4.41 (Ubuntu)"},
			"X-Powered-By":              {"PHP/8.1.2"},
		}, want: want{
			KindHeadersHSTS:               {low, "max-age under 180 days"},
			KindHeadersCSP:                {low, "'unsafe-inline' in script-src"},
			KindHeadersContentTypeOptions: {low, "not nosniff"},
			KindHeadersClickjacking:       {moderate, "X-Frame-Options not DENY or SAMEORIGIN, and no CSP frame-ancestors"},
			KindHeadersReferrerPolicy:     {moderate, "sends full URLs to other origins"},
			KindHeadersVersionDisclosure:  {low, "version in headers"},
		}},
		{name: "HSTS without max-age", hdr: goodBut(map[string][]string{"Strict-Transport-Security": {"includeSubDomains"}}),
			want: want{KindHeadersHSTS: {moderate, "invalid"}}},
		{name: "HSTS max-age not a number", hdr: goodBut(map[string][]string{"Strict-Transport-Security": {"max-age=-5"}}),
			want: want{KindHeadersHSTS: {moderate, "invalid"}}},
		{name: "HSTS quoted and huge", hdr: goodBut(map[string][]string{"Strict-Transport-Security": {`MAX-AGE="99999999999999999999999"; preload`}}),
			want: want{}},
		{name: "HSTS only the first counts", hdr: goodBut(map[string][]string{"Strict-Transport-Security": {"max-age=0", "max-age=31536000"}}),
			want: want{KindHeadersHSTS: {low, "max-age under 180 days"}}},
		{name: "CSP unsafe-inline with a nonce", hdr: goodBut(map[string][]string{
			"Content-Security-Policy": {"script-src 'nonce-r4nd0m' 'unsafe-inline' 'strict-dynamic'; frame-ancestors 'self'"}}),
			want: want{}},
		{name: "CSP unsafe-inline in default-src", hdr: goodBut(map[string][]string{
			"Content-Security-Policy": {"default-src 'self' 'unsafe-inline'; frame-ancestors 'self'"}}),
			want: want{KindHeadersCSP: {low, "'unsafe-inline' in script-src"}}},
		{name: "CSP script-src overrides default-src", hdr: goodBut(map[string][]string{
			"Content-Security-Policy": {"default-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'self'"}}),
			want: want{}},
		{name: "CSP for framing only", hdr: goodBut(map[string][]string{"Content-Security-Policy": {"frame-ancestors 'none'"}}),
			want: want{KindHeadersCSP: {low, "no script-src or default-src"}}},
		{name: "CSP two policies, one strict", hdr: goodBut(map[string][]string{
			"Content-Security-Policy": {"script-src * 'unsafe-inline'", "default-src 'self', frame-ancestors 'none'"}}),
			want: want{}},
		{name: "CSP only report-only", hdr: goodBut(map[string][]string{
			"Content-Security-Policy": nil, "Content-Security-Policy-Report-Only": {"default-src 'self'"}, "X-Frame-Options": {"DENY"}}),
			want: want{KindHeadersCSP: {moderate, "missing"}}},
		{name: "X-Frame-Options conflicting", hdr: goodBut(map[string][]string{
			"Content-Security-Policy": {"default-src 'self'"}, "X-Frame-Options": {"DENY, ALLOWALL"}}),
			want: want{KindHeadersClickjacking: {moderate, "X-Frame-Options not DENY or SAMEORIGIN, and no CSP frame-ancestors"}}},
		{name: "X-Content-Type-Options case", hdr: goodBut(map[string][]string{"X-Content-Type-Options": {" NoSniff "}}), want: want{}},
		{name: "Referrer-Policy fallback", hdr: goodBut(map[string][]string{"Referrer-Policy": {"no-referrer, some-future-policy"}}), want: want{}},
		{name: "Referrer-Policy last wins", hdr: goodBut(map[string][]string{"Referrer-Policy": {"no-referrer", "no-referrer-when-downgrade"}}),
			want: want{KindHeadersReferrerPolicy: {moderate, "sends full URLs to other origins"}}},
		{name: "Referrer-Policy unknown", hdr: goodBut(map[string][]string{"Referrer-Policy": {"leaky"}}),
			want: want{KindHeadersReferrerPolicy: {low, "no policy the browser knows"}}},
		{name: "versions", hdr: goodBut(map[string][]string{"Server": {"Microsoft-IIS/10.0"}, "X-AspNet-Version": {"4.0.30319"}}),
			want: want{KindHeadersVersionDisclosure: {low, "version in headers"}}},
		{name: "names without versions", hdr: goodBut(map[string][]string{"Server": {"ECS (dcb/7F84)"}, "X-Powered-By": {"Express"}}),
			want: want{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, opts := headerServer(t, tc.plain, withHeaders(tc.hdr))
			fs, err := runCheck(t.Context(), t, NewHeaders(opts), Target{AccountID: "a", Asset: srv.URL + "/page?secret=1"})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]problem{}
			for _, f := range fs {
				if _, dup := got[f.Kind]; dup {
					t.Errorf("kind %s reported twice", f.Kind)
				}
				got[f.Kind] = problem{f.Severity, fmt.Sprint(f.Details["problem"])}
				if f.Subject != srv.URL+"/page" {
					t.Errorf("%s: subject %q, want %s/page", f.Kind, f.Subject, srv.URL)
				}
				if f.Details["status"] != 200 {
					t.Errorf("%s: details %v", f.Kind, f.Details)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("found %v,\nwant %v", got, tc.want)
			}
			for k, w := range tc.want {
				if got[k] != w {
					t.Errorf("%s: found %v, want %v", k, got[k], w)
				}
			}
		})
	}
}

// TestHeadersRedirects checks that the check follows up to five redirects,
// across schemes, and judges the page it ends on; that a sixth fails the
// scan; and that the subject leaves the query out.
func TestHeadersRedirects(t *testing.T) {
	t.Parallel()
	// hops redirects /hop/N to /hop/N-1, and /hop/0 answers.
	hops := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int
		if _, err := fmt.Sscanf(r.URL.Path, "/hop/%d", &n); err != nil || n == 0 {
			withHeaders(good).ServeHTTP(w, r)
			return
		}
		http.Redirect(w, r, fmt.Sprintf("/hop/%d?token=x", n-1), http.StatusFound)
	})
	srv, opts := headerServer(t, false, hops)
	c := NewHeaders(opts)

	fs, err := runCheck(t.Context(), t, c, Target{Asset: srv.URL + "/hop/5"})
	if err != nil || len(fs) != 0 {
		t.Fatalf("5 redirects: %d findings, %v; want none, nil", len(fs), err)
	}
	_, err = runCheck(t.Context(), t, c, Target{Asset: srv.URL + "/hop/6"})
	if err == nil || !strings.Contains(err.Error(), "stopped after 5 redirects") {
		t.Fatalf("6 redirects: %v, want an error", err)
	}

	// HTTP to HTTPS: the page judged is the HTTPS one.
	bare, _ := headerServer(t, false, withHeaders(nil))
	var requests atomic.Int32
	plain, _ := headerServer(t, true, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Redirect(w, r, bare.URL+"/landing?utm=1", http.StatusMovedPermanently)
	}))
	fs, err = runCheck(t.Context(), t, c, Target{Asset: plain.URL})
	if err != nil {
		t.Fatal(err)
	}
	if got := severities(t, fs); got[KindHeadersHSTS] != longhaulv1.Severity_MODERATE || len(got) != 5 {
		t.Errorf("redirected to a bare HTTPS page: found %v", got)
	}
	for _, f := range fs {
		if f.Subject != bare.URL+"/landing" {
			t.Errorf("%s: subject %q, want %s/landing", f.Kind, f.Subject, bare.URL)
		}
	}
	if requests.Load() != 1 {
		t.Errorf("the HTTP server got %d requests", requests.Load())
	}
}

// TestHeadersAnswers checks what status codes and bodies do: a 404 page is
// judged, a 5xx fails the scan, and an endless body is not read to its end.
func TestHeadersAnswers(t *testing.T) {
	t.Parallel()
	srv, opts := headerServer(t, false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/missing":
			http.NotFound(w, r)
		case "/down":
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
		case "/endless":
			buf := make([]byte, 32<<10)
			for {
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
		}
	}))
	c := NewHeaders(opts)
	fs, err := runCheck(t.Context(), t, c, Target{Asset: srv.URL + "/missing"})
	// http.NotFound sends X-Content-Type-Options; the other four are missing.
	if err != nil || len(fs) != 4 || fs[0].Details["status"] != 404 {
		t.Errorf("404: %d findings, %v", len(fs), err)
	}
	_, err = runCheck(t.Context(), t, c, Target{Asset: srv.URL + "/down"})
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("503: %v, want an error naming it", err)
	}
	if _, err := runCheck(t.Context(), t, c, Target{Asset: srv.URL + "/endless"}); err != nil {
		t.Errorf("endless body: %v", err)
	}
}

// TestHeadersFailures checks that what gives no page fails the scan: a
// server that never answers (within the timeout), a closed port, an
// untrusted certificate, a cancelled scan, and assets that are not URLs.
func TestHeadersFailures(t *testing.T) {
	t.Parallel()
	t.Run("silent server", func(t *testing.T) {
		t.Parallel()
		addr := silentServer(t)
		_, err := runCheck(t.Context(), t, NewHeaders(Options{Timeout: 100 * time.Millisecond}), Target{Asset: "http://" + addr + "/"})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("silent server: %v, want a deadline error", err)
		}
	})
	t.Run("closed port", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if _, err := runCheck(t.Context(), t, NewHeaders(Options{}), Target{Asset: addr}); err == nil || !strings.Contains(err.Error(), addr) {
			t.Fatalf("closed port: %v, want an error naming %s", err, addr)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		t.Parallel()
		srv, _ := headerServer(t, false, withHeaders(good))
		_, err := runCheck(t.Context(), t, NewHeaders(Options{RootCAs: x509.NewCertPool()}), Target{Asset: srv.URL})
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("untrusted certificate: %v, want an error", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		addr := silentServer(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := runCheck(ctx, t, NewHeaders(Options{}), Target{Asset: addr}); err != context.Canceled {
			t.Fatalf("cancelled: %v, want context.Canceled", err)
		}
	})
	t.Run("bad asset", func(t *testing.T) {
		t.Parallel()
		for _, asset := range []string{"", "ftp://example.com/", "https:///path", "http://[::1/"} {
			if _, err := runCheck(t.Context(), t, NewHeaders(Options{}), Target{Asset: asset}); err == nil {
				t.Errorf("asset %q: no error", asset)
			}
		}
	})
}

// TestHeadersClient checks that a caller's client is used, with the
// check's redirect limit.
func TestHeadersClient(t *testing.T) {
	t.Parallel()
	srv, _ := headerServer(t, false, withHeaders(good))
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return errors.New("the caller's policy") }
	c := NewHeaders(Options{HTTPClient: client})
	if fs, err := runCheck(t.Context(), t, c, Target{Asset: srv.URL}); err != nil || len(fs) != 0 {
		t.Fatalf("%d findings, %v", len(fs), err)
	}
	if c.client == client || c.client.Transport != client.Transport {
		t.Error("the check does not use a copy of the caller's client")
	}
}

// TestHeadersOddAnswers sends raw responses with headers no sane server
// sends: invalid UTF-8, huge and malformed values, repeated fields. The
// check must neither panic nor report what the edge refuses.
func TestHeadersOddAnswers(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("A", 20<<10)
	answers := []string{
		"Strict-Transport-Security: max-age=99999999999999999999999999999999\r\nServer: \xff\xfe/1.2\xc0\r\nX-Powered-By: " + long + "/9.9\r\n",
		"Strict-Transport-Security: ;;;=;max-age;max-age=\"\r\nContent-Security-Policy: ;;; ,,, ;\r\nContent-Security-Policy: script-src\r\n",
		"Content-Security-Policy: " + long + "\r\nReferrer-Policy: ,,,\r\nX-Frame-Options:\r\nX-Frame-Options: ,\r\n",
		"X-Content-Type-Options: nosniff\xff\r\nX-AspNet-Version: \x80\x80\r\nReferrer-Policy: \"unsafe-url\"\r\n",
		"Strict-Transport-Security: max-age=\"1\r\nContent-Security-Policy: default-src 'unsafe-inline' 'nonce-\r\n",
	}
	ca := newTestCA(t, "Test Root", nil)
	cert := ca.issue(t, leafSpec{names: []string{"127.0.0.1"}})
	var served atomic.Int32
	addr := rawServer(t, &tls.Config{Certificates: []tls.Certificate{cert}}, func(i int) string {
		served.Add(1)
		return "HTTP/1.1 200 OK\r\n" + answers[i%len(answers)] + "Content-Length: 2\r\nConnection: close\r\n\r\nok"
	})
	c := NewHeaders(Options{RootCAs: ca.pool(), Now: func() time.Time { return testNow }, Timeout: 5 * time.Second})
	for i := range answers {
		// runCheck checks every finding against the edge's rules.
		fs, err := runCheck(t.Context(), t, c, Target{Asset: fmt.Sprintf("https://%s/odd/%d", addr, i)})
		t.Logf("answer %d: %d findings, %v", i, len(fs), err)
		for _, f := range fs {
			t.Logf("  %s %s %v", f.Kind, f.Severity, f.Details)
		}
	}
	if served.Load() != int32(len(answers)) {
		t.Errorf("served %d answers, want %d", served.Load(), len(answers))
	}
}

// rawServer answers the i-th connection on loopback (over TLS with cfg) with
// answer(i), bytes as they are, and closes it. It stops when the test ends.
func rawServer(t *testing.T, cfg *tls.Config, answer func(i int) string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				var req []byte
				for !strings.Contains(string(req), "\r\n\r\n") {
					n, err := conn.Read(buf)
					if err != nil {
						return
					}
					req = append(req, buf[:n]...)
				}
				io.WriteString(conn, answer(i))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestJudgeHeadersProperty feeds judgeHeaders arbitrary values of the
// headers it reads, and checks that it never panics and that every finding
// is one the edge accepts.
func TestJudgeHeadersProperty(t *testing.T) {
	t.Parallel()
	names := []string{"Strict-Transport-Security", "Content-Security-Policy", "X-Content-Type-Options",
		"X-Frame-Options", "Referrer-Policy", "Server", "X-Powered-By", "X-AspNet-Version", "X-AspNetMvc-Version"}
	tokens := []string{"max-age=", "31536000", "'unsafe-inline'", "'nonce-", "script-src", "default-src",
		"frame-ancestors", "DENY", "sameorigin", "nosniff", "unsafe-url", "no-referrer", "/1.2", ";", ",", "=", "\"", " ", "\xff", "\x00"}
	c := NewHeaders(Options{})
	rapid.Check(t, func(rt *rapid.T) {
		h := http.Header{}
		for _, name := range rapid.SliceOfDistinct(rapid.SampledFrom(names), rapid.ID).Draw(rt, "names") {
			for range rapid.IntRange(1, 3).Draw(rt, "values") {
				parts := rapid.SliceOf(rapid.OneOf(rapid.SampledFrom(tokens), rapid.StringN(0, 8, -1),
					rapid.Map(rapid.SliceOfN(rapid.Byte(), 0, 8), func(b []byte) string { return string(b) }))).Draw(rt, "parts")
				h.Add(name, strings.Join(parts, ""))
			}
		}
		u := &url.URL{Scheme: rapid.SampledFrom([]string{"http", "https"}).Draw(rt, "scheme"), Host: "example.com",
			Path: rapid.StringN(0, 2000, -1).Draw(rt, "path")}
		for _, f := range judgeHeaders(u, 200, h) {
			checkFinding(rt, c, f)
		}
	})
}
