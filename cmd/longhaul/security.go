package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/tlsconf"
)

// edgeSecurity applies the edge's TLS, gossip key and limit flags to cfg:
// the server flags serve both listeners over TLS (--tls-client-ca: checkers
// need a certificate); --tls-ca turns on TLS to the primary, presenting
// --tls-cert for mutual TLS.
func edgeSecurity(cfg *edge.Config, f tlsconf.Flags, gossipKeyFile string, maxStreams uint) error {
	var err error
	if cfg.TLS, err = f.Server(); err != nil {
		return err
	}
	if cfg.PeerTLS, err = f.Client(); err != nil {
		return err
	}
	if dial, err := clientTLS(f); err != nil {
		return err
	} else if dial != nil {
		cfg.Shipper.DialOptions = append(cfg.Shipper.DialOptions, dial)
	}
	if cfg.Access.ClientRate < 0 {
		return fmt.Errorf("--client-rate: want insights a second, or 0 for no limit; got %v", cfg.Access.ClientRate)
	}
	if cfg.Access.ClientBurst < 0 {
		return fmt.Errorf("--client-burst: want insights, or 0 for two seconds of --client-rate; got %d", cfg.Access.ClientBurst)
	}
	if maxStreams < 1 || maxStreams > math.MaxUint32 {
		return fmt.Errorf("--max-streams-per-conn: want 1 to %d, got %d", uint32(math.MaxUint32), maxStreams)
	}
	cfg.MaxStreamsPerConn = uint32(maxStreams)
	if gossipKeyFile != "" {
		if cfg.Gossip.BindAddr == "" {
			return errors.New("--gossip-key-file: needs --gossip-listen")
		}
		if cfg.Gossip.SecretKey, err = readGossipKey(gossipKeyFile); err != nil {
			return fmt.Errorf("--gossip-key-file: %w", err)
		}
	}
	return nil
}

// clientTLS returns the dial option for TLS to another role when --tls-ca
// is set (presenting --tls-cert, if any, for mutual TLS), or nil. A process
// that serves TLS itself (--tls-cert) may still talk to a role that does
// not: --tls-ca alone decides.
func clientTLS(f tlsconf.Flags) (grpc.DialOption, error) {
	if f.CA == "" {
		return nil, nil
	}
	c, err := f.Client()
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(c)), nil
}

// readGossipKey reads a base64 key of 16, 24 or 32 bytes.
func readGossipKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%s: not base64: %w", path, err)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("%s: the key is %d bytes, want 16, 24 or 32 (head -c 32 /dev/urandom | base64)", path, n)
	}
	return key, nil
}

// readTokenFile reads the one token of a checker's --token-file: the first
// line that is not blank or a # comment.
func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.ContainsAny(line, " \t") {
			return "", fmt.Errorf("%s: the token line has more than one field (the file holds the token alone)", path)
		}
		if len(line) < edge.MinTokenLength {
			return "", fmt.Errorf("%s: the token is %d characters; edges accept no token shorter than %d", path, len(line), edge.MinTokenLength)
		}
		return line, nil
	}
	return "", fmt.Errorf("%s: no token in it", path)
}
