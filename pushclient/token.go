package pushclient

import (
	"context"
	"net"
	"net/url"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// bearer sends Config.Token with every call. It does not tell gRPC it
// requires transport security (gRPC would then refuse plain text even to
// loopback, and at dial time, where the client would take it for an edge
// that does not answer): it checks for itself, per call, and fails the call
// with Unauthenticated, which the client does not retry.
type bearer struct {
	header        string
	allowInsecure bool
}

func (b bearer) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	if !b.allowInsecure {
		ri, _ := credentials.RequestInfoFromContext(ctx)
		if err := credentials.CheckSecurityLevel(ri.AuthInfo, credentials.PrivacyAndIntegrity); err != nil {
			host := audienceHost(uri)
			if !loopback(host) {
				return nil, status.Errorf(codes.Unauthenticated,
					"pushclient: not sending the token in plain text to %s: dial edges with TLS, or set AllowInsecureToken (development only)", host)
			}
		}
	}
	return map[string]string{"authorization": b.header}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// audienceHost is the host of the call's audience ("https://host:port/service"),
// the address the client dialed.
func audienceHost(uri []string) string {
	if len(uri) == 0 {
		return ""
	}
	u, err := url.Parse(uri[0])
	if err != nil {
		return ""
	}
	return u.Hostname()
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
