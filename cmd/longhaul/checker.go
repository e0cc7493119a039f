package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/longhaul/longhaul/checker"
	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/internal/kafka"
	"github.com/longhaul/longhaul/internal/serve"
	"github.com/longhaul/longhaul/internal/tlsconf"
	"github.com/longhaul/longhaul/pushclient"
	"github.com/longhaul/longhaul/topology"
)

func runChecker(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("longhaul checker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg                    checker.Config
		logs                   logFlags
		lane, names            string
		brokers, edges, listen string
		region                 string
		opts                   checks.Options
		tlsFlags               tlsconf.Flags
		tokenFile              string
		insecureToken          bool
	)
	fs.StringVar(&lane, "lane", "fast", "the lane to consume: fast or slow")
	fs.StringVar(&names, "checks", checks.NameSynthetic, "comma-separated checks to run: "+strings.Join(checks.BuiltinNames(), ", "))
	fs.StringVar(&brokers, "kafka-brokers", "127.0.0.1:9092", "comma-separated Kafka brokers")
	fs.StringVar(&edges, "edge", "127.0.0.1:7300", "comma-separated edges' gRPC addresses, nearest first (with --region: seeds to learn the cluster's edges from)")
	fs.StringVar(&region, "region", "", "the checker's region: push to its healthy edges, else the nearest other region's, as the edges' gossip says (GET /v1/topology); empty: the --edge list in order")
	fs.StringVar(&cfg.Group, "group", "", "consumer group (default longhaul.checker.<lane>.<checks>)")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", checker.DefaultMaxInFlight, "jobs polled and not yet committed; a crash redoes at most this many")
	fs.DurationVar(&cfg.FastBudget, "fast-budget", checker.DefaultFastBudget, "fast lane: a scan taking longer is handed to the slow lane")
	fs.DurationVar(&cfg.SlowTimeout, "slow-timeout", checker.DefaultSlowTimeout, "slow lane: a scan taking longer fails")
	fs.IntVar(&cfg.MaxAttempts, "max-attempts", checker.DefaultMaxAttempts, "a job handed on this many times goes to the dead-letter topic")
	fs.DurationVar(&cfg.AbandonAfter, "abandon-after", checker.DefaultAbandonAfter, "on revocation or shutdown, how long running scans may take before they are cancelled")
	fs.StringVar(&listen, "http-listen", "127.0.0.1:7600", "HTTP address of /healthz, /readyz and /metrics")
	fs.DurationVar(&opts.Timeout, "check-timeout", 10*time.Second, "network timeout of the tls and headers checks")
	fs.IntVar(&opts.Synthetic.Insights, "synthetic-insights", checks.DefaultSyntheticInsights, "synthetic check: mean insights per scan")
	fs.DurationVar(&opts.Synthetic.Fast, "synthetic-fast", checks.DefaultSyntheticFast, "synthetic check: duration of a fast scan")
	fs.DurationVar(&opts.Synthetic.Slow, "synthetic-slow", checks.DefaultSyntheticSlow, "synthetic check: duration of a slow scan")
	fs.Float64Var(&opts.Synthetic.SlowFraction, "synthetic-slow-fraction", checks.DefaultSyntheticSlowFraction, "synthetic check: share of slow assets (negative: none)")
	tlsFlags.Register(fs, true, true)
	fs.StringVar(&tokenFile, "token-file", "", "file holding the bearer token to push with (edges started with --tokens need one); sent over TLS (--tls-ca), or in plain text to loopback edges only")
	fs.BoolVar(&insecureToken, "allow-insecure-token", false, "send the --token-file token in plain text to edges that are not on loopback (development networks only)")
	logs.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	srvTLS, err := tlsFlags.Server()
	if err != nil {
		return err
	}
	if cfg.Lane, err = kafka.ParseLane(lane); err != nil {
		return fmt.Errorf("--lane: %w", err)
	}
	if cfg.Checks, err = checks.Select(splitList(names), opts); err != nil {
		return fmt.Errorf("--checks: %w", err)
	}
	if cfg.Brokers = splitList(brokers); len(cfg.Brokers) == 0 {
		return errors.New("--kafka-brokers: required")
	}
	if len(splitList(edges)) == 0 {
		return errors.New("--edge: required")
	}
	reg := serve.NewRegistry()
	pcfg := pushclient.Config{Edges: splitList(edges), Logger: log, Metrics: reg, AllowInsecureToken: insecureToken}
	if dial, err := clientTLS(tlsFlags); err != nil {
		return err
	} else if dial != nil {
		pcfg.DialOptions = append(pcfg.DialOptions, dial)
	}
	if tokenFile != "" {
		if pcfg.Token, err = readTokenFile(tokenFile); err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
	}
	if region != "" {
		// The picker asks the edges for the members and checks their
		// health (neither needs a token), over the same TLS.
		picker, err := topology.NewPicker(topology.PickerConfig{Region: region, Seeds: pcfg.Edges, Logger: log, DialOptions: pcfg.DialOptions})
		if err != nil {
			return fmt.Errorf("--region: %w", err)
		}
		defer picker.Close()
		pcfg.Picker = picker
	}
	pc, err := pushclient.New(pcfg)
	if err != nil {
		return err
	}
	defer pc.Close()
	cfg.Pusher, cfg.Logger, cfg.Registry = checker.FromPushClient(pc), log, reg
	c, err := checker.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--http-listen: %w", err)
	}
	ln = serve.HTTPListener(ln, srvTLS)
	web := serve.StartHTTP(ln, serve.Mux(reg, nil), log)
	log.Info("checker consuming", "lane", lane, "group", c.Group(), "checks", names, "edges", edges, "http", ln.Addr().String())
	runErr := c.Run(ctx)
	log.Info("checker stopped", "stats", fmt.Sprintf("%+v", c.Stats()))
	return errors.Join(runErr, web.Stop(context.WithoutCancel(ctx)))
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}
