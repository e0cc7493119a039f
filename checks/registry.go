package checks

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Names of the built-in checks.
const (
	NameSynthetic = "synthetic"
	NameTLS       = "tls"
	NameHeaders   = "headers"
)

// DefaultTimeout is Options.Timeout's default.
const DefaultTimeout = 10 * time.Second

// Options configure the built-in checks. The zero value is ready to use: each
// zero field means its default.
type Options struct {
	// Synthetic configures the synthetic check.
	Synthetic SyntheticConfig

	// RootCAs are the roots the tls check verifies chains against and the
	// headers check trusts for HTTPS. Default (nil): the system's roots.
	RootCAs *x509.CertPool
	// Timeout bounds each network exchange of the tls and headers checks:
	// each connection and handshake of the tls check (it makes up to
	// three), the whole GET with its redirects for headers. Default
	// DefaultTimeout (10s).
	Timeout time.Duration
	// Now is the clock certificates are judged by, by the tls check and by
	// the headers check's default client. Default time.Now.
	Now func() time.Time
	// DialContext opens the tls check's connections, and the headers
	// check's when HTTPClient is nil. Tests point host names at loopback
	// servers with it. Default: a net.Dialer's.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// HTTPClient, when set, is what the headers check sends its requests
	// with (a shallow copy whose CheckRedirect enforces the check's redirect
	// limit). Default: a client of its own that dials with DialContext,
	// trusts RootCAs at Now, uses no proxy and keeps no idle connections.
	HTTPClient *http.Client
}

// Validate reports the first field of o that is out of range, by name.
func (o Options) Validate() error {
	if o.Timeout < 0 {
		return fmt.Errorf("checks: options: Timeout must not be negative, got %v", o.Timeout)
	}
	if err := o.Synthetic.Validate(); err != nil {
		return fmt.Errorf("checks: options: %w", err)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DialContext == nil {
		o.DialContext = (&net.Dialer{}).DialContext
	}
	o.Synthetic = o.Synthetic.withDefaults()
	return o
}

// Builtin returns a new map of the built-in checks by name, configured by
// opts. Fields of opts out of range (see Validate) are clamped to the
// nearest sensible value; Select refuses them instead.
func Builtin(opts Options) map[string]Check {
	return map[string]Check{
		NameSynthetic: NewSynthetic(opts.Synthetic),
		NameTLS:       NewTLS(opts),
		NameHeaders:   NewHeaders(opts),
	}
}

// BuiltinNames returns the names of the built-in checks, sorted.
func BuiltinNames() []string {
	return []string{NameHeaders, NameSynthetic, NameTLS}
}

// Select returns the built-in checks with the given names, in that order. It
// fails if opts are invalid, if no name is given, or if a name is unknown or
// given twice, naming it.
func Select(names []string, opts Options) ([]Check, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, errors.New("checks: no check selected (built-in: " + strings.Join(BuiltinNames(), ", ") + ")")
	}
	all := Builtin(opts)
	out := make([]Check, 0, len(names))
	for i, name := range names {
		c, ok := all[name]
		if !ok {
			return nil, fmt.Errorf("checks: unknown check %q (built-in: %s)", name, strings.Join(BuiltinNames(), ", "))
		}
		if slices.Contains(names[:i], name) {
			return nil, fmt.Errorf("checks: check %q selected twice", name)
		}
		out = append(out, c)
	}
	return out, nil
}

// KindCheck returns the name of the check that produces insights of kind: a
// kind is "<check>.<rest>", so "tls.expiry" gives "tls". It returns "" for a
// kind that does not have that form.
func KindCheck(kind string) string {
	check, rest, ok := strings.Cut(kind, ".")
	if !ok || check == "" || rest == "" {
		return ""
	}
	return check
}
