package checks

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// Kinds of the headers check. The subject of each is the origin and path of
// the page the check ended on, after redirects ("https://example.com/").
const (
	// KindHeadersHSTS: an HTTPS page without a valid
	// Strict-Transport-Security (moderate), or with a max-age under 180
	// days (low).
	KindHeadersHSTS = "headers.hsts"
	// KindHeadersCSP: no Content-Security-Policy (moderate), or one that
	// does not restrict inline scripts: 'unsafe-inline' without a nonce or
	// hash in script-src (or default-src), or neither directive (low).
	KindHeadersCSP = "headers.csp"
	// KindHeadersContentTypeOptions: X-Content-Type-Options is not
	// "nosniff" (low).
	KindHeadersContentTypeOptions = "headers.x-content-type-options"
	// KindHeadersClickjacking: no valid X-Frame-Options (DENY or
	// SAMEORIGIN) and no CSP frame-ancestors (moderate).
	KindHeadersClickjacking = "headers.clickjacking"
	// KindHeadersReferrerPolicy: no Referrer-Policy the browser knows
	// (low), or one that sends full URLs to other origins: unsafe-url,
	// no-referrer-when-downgrade (moderate).
	KindHeadersReferrerPolicy = "headers.referrer-policy"
	// KindHeadersVersionDisclosure: Server or X-Powered-By name a version,
	// or X-AspNet-Version or X-AspNetMvc-Version are sent (low).
	KindHeadersVersionDisclosure = "headers.version-disclosure"
)

// Limits of the headers check.
const (
	// HeadersMaxRedirects is how many redirects the check follows; one
	// more fails the scan.
	HeadersMaxRedirects = 5
	// headersMaxBody is how much of the body is read (and discarded)
	// before the connection is closed.
	headersMaxBody = 64 << 10
	// headersMaxHeaderBytes bounds the response headers the default client
	// accepts.
	headersMaxHeaderBytes = 64 << 10
	// hstsMinMaxAge is the shortest HSTS max-age not reported.
	hstsMinMaxAge = 180 * 24 * time.Hour
)

// headersUserAgent is what the check calls itself to the servers it scans.
const headersUserAgent = "longhaul-checks/1 (security scan)"

// Headers is the check of a web page's security headers.
//
// The asset is an http or https URL, or a host (or "host:port", or
// "host/path"), which means https://host/. The check sends one GET, follows
// up to HeadersMaxRedirects redirects, reads at most 64 KiB of the body, and
// judges the headers of the final response. A network failure, a redirect
// too many and a 5xx answer fail the scan: a site that is down says nothing
// about its headers.
type Headers struct {
	client  *http.Client
	timeout time.Duration
}

// NewHeaders returns the headers check.
func NewHeaders(opts Options) *Headers {
	opts = opts.withDefaults()
	var client http.Client
	if opts.HTTPClient != nil {
		client = *opts.HTTPClient
	} else {
		client.Transport = &http.Transport{
			DialContext:     opts.DialContext,
			TLSClientConfig: &tls.Config{RootCAs: opts.RootCAs, Time: opts.Now},
			// Every scan is of another site: idle connections would only
			// pile up.
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: headersMaxHeaderBytes,
		}
	}
	client.CheckRedirect = func(_ *http.Request, via []*http.Request) error {
		if len(via) > HeadersMaxRedirects {
			return fmt.Errorf("stopped after %d redirects", HeadersMaxRedirects)
		}
		return nil
	}
	return &Headers{client: &client, timeout: opts.Timeout}
}

// Name returns "headers".
func (*Headers) Name() string { return NameHeaders }

// Kinds returns the kinds the headers check reports.
func (*Headers) Kinds() []string {
	return []string{KindHeadersHSTS, KindHeadersCSP, KindHeadersContentTypeOptions,
		KindHeadersClickjacking, KindHeadersReferrerPolicy, KindHeadersVersionDisclosure}
}

// Run fetches t.Asset and reports what its headers lack.
func (c *Headers) Run(ctx context.Context, t Target, report func(Finding)) error {
	u, err := headersURL(t.Asset)
	if err != nil {
		return fmt.Errorf("checks: headers: %w", err)
	}
	status, final, h, err := c.get(ctx, u)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return fmt.Errorf("checks: headers: %w", err)
	}
	if status >= 500 {
		return fmt.Errorf("checks: headers: GET %s: %d %s", final.Redacted(), status, http.StatusText(status))
	}
	for _, f := range judgeHeaders(final, status, h) {
		report(f)
	}
	return nil
}

// get fetches u and returns the final response's status, URL and headers.
func (c *Headers) get(ctx context.Context, u string) (int, *url.URL, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("User-Agent", headersUserAgent)
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	// Draining a little lets a server that sent a short page finish
	// cleanly; more would only cost time.
	_, _ = io.CopyN(io.Discard, resp.Body, headersMaxBody)
	resp.Body.Close()
	return resp.StatusCode, resp.Request.URL, resp.Header, nil
}

// headersURL returns the URL to fetch for an asset.
func headersURL(asset string) (string, error) {
	raw := asset
	if !strings.Contains(asset, "://") {
		raw = "https://" + asset
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("asset %q: %w", asset, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("asset %q: scheme %q, want http, https or none", asset, u.Scheme)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("asset %q: no host", asset)
	}
	if u.Path == "" {
		u.Path = "/"
	}
	return u.String(), nil
}

// judgeHeaders returns the findings about the page at final, answered with
// status and h. It reads h only with methods that cannot fail, and cleans
// every value it copies, so no header a server sends can make it panic or
// produce an insight the edge refuses.
func judgeHeaders(final *url.URL, status int, h http.Header) []Finding {
	path := final.EscapedPath()
	if path == "" {
		path = "/"
	}
	subject := cleanText(final.Scheme+"://"+final.Host+path, maxSubjectBytes)
	var out []Finding
	add := func(kind string, sev longhaulv1.Severity, problem string, extra map[string]any) {
		d := map[string]any{"status": status, "problem": problem}
		for k, v := range extra {
			if v != "" { // a header not sent
				d[k] = v
			}
		}
		out = append(out, Finding{Kind: kind, Subject: subject, Severity: sev, Details: d})
	}
	value := func(name string) string { return cleanText(strings.Join(h.Values(name), ", "), maxTextBytes) }

	// Strict-Transport-Security: browsers heed only the first, and only
	// over HTTPS.
	if final.Scheme == "https" {
		switch hsts := h.Get("Strict-Transport-Security"); {
		case hsts == "":
			add(KindHeadersHSTS, longhaulv1.Severity_MODERATE, "missing", nil)
		default:
			maxAge, ok := hstsMaxAge(hsts)
			switch {
			case !ok:
				add(KindHeadersHSTS, longhaulv1.Severity_MODERATE, "invalid",
					map[string]any{"value": cleanText(hsts, maxTextBytes)})
			case maxAge < int64(hstsMinMaxAge/time.Second):
				add(KindHeadersHSTS, longhaulv1.Severity_LOW, "max-age under 180 days",
					map[string]any{"max_age": maxAge})
			}
		}
	}

	// Content-Security-Policy: every policy sent is enforced, so scripts are
	// restricted if any policy restricts them.
	policies := cspPolicies(h.Values("Content-Security-Policy"))
	frameAncestors := false
	if len(policies) == 0 {
		add(KindHeadersCSP, longhaulv1.Severity_MODERATE, "missing", nil)
	} else {
		restricted, unsafeInline := false, false
		for _, p := range policies {
			if _, ok := p["frame-ancestors"]; ok {
				frameAncestors = true
			}
			src, ok := p["script-src"]
			if !ok {
				src, ok = p["default-src"]
			}
			switch {
			case !ok:
			case allowsInlineScript(src):
				unsafeInline = true
			default:
				restricted = true
			}
		}
		if !restricted {
			problem := "no script-src or default-src"
			if unsafeInline {
				problem = "'unsafe-inline' in script-src"
			}
			add(KindHeadersCSP, longhaulv1.Severity_LOW, problem,
				map[string]any{"value": value("Content-Security-Policy")})
		}
	}

	// X-Content-Type-Options.
	if xcto := h.Get("X-Content-Type-Options"); !strings.EqualFold(strings.TrimSpace(xcto), "nosniff") {
		problem := "missing"
		if xcto != "" {
			problem = "not nosniff"
		}
		add(KindHeadersContentTypeOptions, longhaulv1.Severity_LOW, problem,
			map[string]any{"value": value("X-Content-Type-Options")})
	}

	// Framing: X-Frame-Options, or CSP frame-ancestors, which supersedes it.
	if !frameAncestors && !validFrameOptions(h.Values("X-Frame-Options")) {
		problem := "no X-Frame-Options or CSP frame-ancestors"
		if len(h.Values("X-Frame-Options")) > 0 {
			problem = "X-Frame-Options not DENY or SAMEORIGIN, and no CSP frame-ancestors"
		}
		add(KindHeadersClickjacking, longhaulv1.Severity_MODERATE, problem,
			map[string]any{"x_frame_options": value("X-Frame-Options")})
	}

	// Referrer-Policy.
	switch rp := referrerPolicy(h.Values("Referrer-Policy")); rp {
	case "":
		problem := "missing"
		if len(h.Values("Referrer-Policy")) > 0 {
			problem = "no policy the browser knows"
		}
		add(KindHeadersReferrerPolicy, longhaulv1.Severity_LOW, problem,
			map[string]any{"value": value("Referrer-Policy")})
	case "unsafe-url", "no-referrer-when-downgrade":
		add(KindHeadersReferrerPolicy, longhaulv1.Severity_MODERATE, "sends full URLs to other origins",
			map[string]any{"value": rp})
	}

	// Versions.
	disclosed := map[string]any{}
	for _, name := range [...]string{"Server", "X-Powered-By"} {
		if v := strings.Join(h.Values(name), ", "); versionPattern.MatchString(v) {
			disclosed[name] = cleanText(v, maxTextBytes)
		}
	}
	for _, name := range [...]string{"X-AspNet-Version", "X-AspNetMvc-Version"} {
		if v := value(name); v != "" {
			disclosed[name] = v
		}
	}
	if len(disclosed) > 0 {
		add(KindHeadersVersionDisclosure, longhaulv1.Severity_LOW, "version in headers",
			map[string]any{"headers": disclosed})
	}
	return out
}

// versionPattern matches what looks like a version: "1.18", "nginx/1",
// "PHP/v8".
var versionPattern = regexp.MustCompile(`\d+\.\d+|/v?\d+\b`)

// hstsMaxAge returns the max-age directive of a Strict-Transport-Security
// value (RFC 6797 6.1), false if it has none or it is not a number. A
// number too big for int64 counts as the largest int64.
func hstsMaxAge(v string) (int64, bool) {
	for _, d := range strings.Split(v, ";") {
		name, val, _ := strings.Cut(d, "=")
		if !strings.EqualFold(strings.TrimSpace(name), "max-age") {
			continue
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
		if val == "" || strings.Trim(val, "0123456789") != "" {
			return 0, false
		}
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			// Only digits, so the only failure is overflow.
			n = 1<<63 - 1
		}
		return n, true
	}
	return 0, false
}

// cspPolicies parses Content-Security-Policy header values: each holds
// policies separated by commas, each policy directives separated by
// semicolons. A policy maps each directive's lower-case name to its
// sources; the first of two directives of one name wins, as in browsers.
func cspPolicies(values []string) []map[string][]string {
	var out []map[string][]string
	for _, v := range values {
		for _, policy := range strings.Split(v, ",") {
			p := map[string][]string{}
			for _, d := range strings.Split(policy, ";") {
				fields := strings.Fields(d)
				if len(fields) == 0 {
					continue
				}
				name := strings.ToLower(fields[0])
				if _, dup := p[name]; !dup {
					p[name] = fields[1:]
				}
			}
			if len(p) > 0 {
				out = append(out, p)
			}
		}
	}
	return out
}

// allowsInlineScript says whether a script-src list lets inline scripts
// run: 'unsafe-inline' does, unless a nonce or hash is listed too (then
// browsers ignore it).
func allowsInlineScript(sources []string) bool {
	inline := false
	for _, s := range sources {
		s = strings.ToLower(s)
		switch {
		case s == "'unsafe-inline'":
			inline = true
		case strings.HasPrefix(s, "'nonce-"), strings.HasPrefix(s, "'sha256-"),
			strings.HasPrefix(s, "'sha384-"), strings.HasPrefix(s, "'sha512-"):
			return false
		}
	}
	return inline
}

// validFrameOptions says whether X-Frame-Options values forbid framing by
// other origins: every value DENY or SAMEORIGIN.
func validFrameOptions(values []string) bool {
	n := 0
	for _, v := range values {
		for _, tok := range strings.Split(v, ",") {
			switch strings.ToLower(strings.TrimSpace(tok)) {
			case "deny", "sameorigin":
				n++
			case "":
			default:
				return false
			}
		}
	}
	return n > 0
}

// referrerPolicy returns the policy a browser applies for Referrer-Policy
// values: the last token it knows, "" if none.
func referrerPolicy(values []string) string {
	policy := ""
	for _, v := range values {
		for _, tok := range strings.Split(v, ",") {
			switch tok = strings.ToLower(strings.TrimSpace(tok)); tok {
			case "no-referrer", "no-referrer-when-downgrade", "origin", "origin-when-cross-origin",
				"same-origin", "strict-origin", "strict-origin-when-cross-origin", "unsafe-url":
				policy = tok
			}
		}
	}
	return policy
}
