package devstack

import (
	"fmt"
	"io"
	"strings"
)

// ExampleInsight is the JSON of the push request the banner's curl and
// grpcurl examples send; the shell fills in OBSERVED_AT.
const ExampleInsight = `{"insights":[{"account_id":"acct-you","asset":"you.example","kind":"manual.hello",` +
	`"subject":"first-push","severity":"HIGH","details":{"note":"pushed by hand"},` +
	`"observed_at":"OBSERVED_AT","scan_id":"manual-1","checker":"curl"}]}`

// shellInsight is ExampleInsight for a shell command in single quotes, with
// the time of the push from date(1).
func shellInsight() string {
	return "'" + strings.Replace(ExampleInsight, "OBSERVED_AT", `'"$(date -u +%FT%TZ)"'`, 1) + "'"
}

// CurlPush and GRPCurlPush are the commands the banner prints to push
// ExampleInsight to edge eu-1.
func (s *Stack) CurlPush() string {
	return fmt.Sprintf("curl -sS%s -H 'Content-Type: application/json' -d %s %s/v1/insights:push",
		s.curlTLS(s.certs.edgeTLS()), shellInsight(), s.edgeURL(s.edges[0]))
}

// GRPCurlPush is the grpcurl form of CurlPush (the edges serve gRPC
// reflection).
func (s *Stack) GRPCurlPush() string {
	tls := "-plaintext"
	if s.certs.edgeTLS() {
		tls = "-cacert " + s.certs.CA()
	}
	return fmt.Sprintf("grpcurl %s -d %s %s longhaul.v1.Ingest/Push", tls, shellInsight(), s.edges[0].svc.Addr())
}

func (s *Stack) curlTLS(on bool) string {
	if !on {
		return ""
	}
	return " --cacert " + s.certs.CA()
}

func scheme(tls bool) string {
	if tls {
		return "https://"
	}
	return "http://"
}

func (s *Stack) edgeURL(e *edgeRun) string { return scheme(s.certs.edgeTLS()) + e.svc.HTTPAddr() }

// WriteBanner writes where every piece runs and how to use the stack.
func (s *Stack) WriteBanner(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	where := "removed when it stops (--keep keeps it)"
	if s.keeps() {
		where = "kept when it stops"
	}
	p("longhaul dev: everything runs in this process; files in %s, %s", s.cfg.Dir, where)
	p("")
	if s.pg != nil {
		p("  PostgreSQL   %s   (throwaway cluster in %s)", s.databaseURL, s.pg.DataDir())
	} else {
		p("  PostgreSQL   %s", redactURL(s.databaseURL))
	}
	if s.kafka != nil {
		p("  Kafka        %s   (in-process kfake, %d partitions per lane)", strings.Join(s.brokers, ","), s.cfg.Partitions)
	} else {
		p("  Kafka        %s", strings.Join(s.brokers, ","))
	}
	p("  primary      %s gRPC   %s/metrics", s.primary.Addr(), scheme(s.certs.primary() != nil)+s.primary.HTTPAddr())
	for _, region := range Regions {
		link := "ships directly"
		if l := s.links[region]; l != nil {
			rtt := s.cfg.NearRTT
			if region == FarRegion {
				rtt = s.cfg.FarRTT
			}
			link = fmt.Sprintf("ships across a link of %s RTT (toxiproxy %s)", short(rtt), l.Addr())
		}
		b := s.cfg.Budgets[region]
		p("  region %-5s %s; budget ack p99 %s, visible p99 %s", region, link, short(b.AckP99), short(b.VisibleP99))
		for _, e := range s.edges {
			if e.spec.region == region {
				p("    edge %-6s %s gRPC   %s   gossip %s", e.spec.name, e.svc.Addr(), s.edgeURL(e), e.svc.Topology().Addr())
			}
		}
		for _, rc := range s.regions {
			if rc.region == region {
				p("    checkers    fast and slow lane, pushing to %s's edges   http://%s/metrics", region, rc.httpAddr)
			}
		}
	}
	p("  scheduler    %s   %d synthetic assets (%d big-%d), every plan every %s",
		scheme(s.certs.scheduler() != nil)+s.scheduler.HTTPAddr(), s.assets, max(s.cfg.BigAssets, 0), s.cfg.BigInsights, short(s.cfg.Interval))
	if s.certs != nil {
		if s.certs.edgeTLS() {
			p("  TLS          certificates in %s: the primary (mutual TLS, edges present edge.pem), the edges, the scheduler", s.certs.dir)
		} else {
			p("  TLS          certificates in %s: the primary (mutual TLS, edges present edge.pem) and the scheduler", s.certs.dir)
			p("               (the edges' own listeners stay plaintext until the edge serves TLS)")
		}
	}
	first := s.edges[0]
	p("")
	p("Status page:   %s/ui", s.edgeURL(first))
	statusTLS := ""
	if s.certs.edgeTLS() {
		statusTLS = " --tls-ca " + s.certs.CA()
	}
	p("Status:        longhaul status --edge %s%s", first.svc.HTTPAddr(), statusTLS)
	p("Budget:        curl -sS%s %s/v1/budget", s.curlTLS(s.certs.edgeTLS()), s.edgeURL(first))
	p("Topology:      curl -sS%s %s/v1/topology", s.curlTLS(s.certs.edgeTLS()), s.edgeURL(first))
	var metrics []string
	metrics = append(metrics, scheme(s.certs.primary() != nil)+s.primary.HTTPAddr()+"/metrics")
	for _, e := range s.edges {
		metrics = append(metrics, s.edgeURL(e)+"/metrics")
	}
	metrics = append(metrics, scheme(s.certs.scheduler() != nil)+s.scheduler.HTTPAddr()+"/metrics")
	for _, rc := range s.regions {
		metrics = append(metrics, "http://"+rc.httpAddr+"/metrics")
	}
	p("Metrics:       %s", strings.Join(metrics, " "))
	if s.certs != nil {
		p("               (https: curl --cacert %s)", s.certs.CA())
	}
	p("")
	p("Push an insight yourself (to edge %s), over HTTP and over gRPC:", first.spec.name)
	p("  %s", s.CurlPush())
	p("  %s", s.GRPCurlPush())
	p("and see it in PostgreSQL (within the region's visible budget):")
	p("  psql '%s' -c \"SELECT kind, subject, severity, last_seen_at FROM insights WHERE account_id = 'acct-you'\"", redactURL(s.databaseURL))
	p("Ask for an on-demand scan of an account:")
	p("  curl -sS%s -X POST %s/v1/scans -d '{\"account_id\":\"acct-00\"}'", s.curlTLS(s.certs.scheduler() != nil),
		scheme(s.certs.scheduler() != nil)+s.scheduler.HTTPAddr())
	p("")
	p("Every %s, one line per region: scans/s and insights/s of its checkers, insights/s applied from its edges,", s.cfg.Every)
	p("push-acknowledged and visible-in-PostgreSQL p99 against the region's budget, records not yet applied.")
	p("(Checkers push to another region's edges while their own are over budget: then insights/s and applied/s part.)")
	p("Ctrl-C stops everything (a second Ctrl-C forces the exit).")
	p("")
}
