package deploy

import (
	"bufio"
	"errors"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/longhaul/longhaul/scheduler"
)

// TestAssetsFile proves that deploy/assets.jsonl is what the assets job
// imports and what the scheduler accepts (its own validation), covers
// every plan, asks only for checks that a checker on each lane runs (a job
// can land on either), and that the assets scanned over the network are
// the deployment's own services: `docker compose up` scans nothing outside
// the user's machine.
func TestAssetsFile(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	if inv := serviceInvocation(t, cf, "assets"); inv != nil && len(inv.args) == 1 {
		found := false
		for _, m := range cf.Services["assets"].Volumes {
			found = found || (m.Type == "bind" && m.Target == inv.args[0] && strings.TrimPrefix(m.Source, "./") == "deploy/assets.jsonl")
		}
		if !found {
			t.Errorf("assets: imports %s, where deploy/assets.jsonl is not mounted", inv.args[0])
		}
	}

	f, err := os.Open("assets.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		body  strings.Builder
		lines []int // line of each asset
	)
	body.WriteString(`{"assets":[`)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if len(lines) > 0 {
			body.WriteString(",")
		}
		body.WriteString(line)
		lines = append(lines, n)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	body.WriteString("]}")
	assets, err := scheduler.DecodeAssets(strings.NewReader(body.String()))
	if err != nil {
		var in *scheduler.InputError
		if errors.As(err, &in) && in.Index >= 0 && in.Index < len(lines) {
			t.Fatalf("assets.jsonl line %d: %s: %s", lines[in.Index], in.Field, in.Reason)
		}
		t.Fatalf("assets.jsonl: %v", err)
	}

	plans := map[scheduler.Plan]int{}
	for _, a := range assets {
		plans[a.Plan]++
	}
	for _, p := range scheduler.Plans {
		if plans[p] == 0 {
			t.Errorf("assets.jsonl: no asset on the %s plan", p)
		}
	}

	run := map[string]map[string]bool{} // lane → checks
	for _, name := range cf.longhaulServices() {
		inv := serviceInvocation(t, cf, name)
		if inv == nil || strings.Join(inv.path, " ") != "checker" {
			continue
		}
		lane := inv.value("lane")
		if run[lane] == nil {
			run[lane] = map[string]bool{}
		}
		for c := range strings.SplitSeq(inv.value("checks"), ",") {
			run[lane][strings.TrimSpace(c)] = true
		}
	}
	for i, a := range assets {
		for _, c := range a.Checks {
			for _, lane := range []string{"fast", "slow"} {
				if !run[lane][c] {
					t.Errorf("assets.jsonl line %d: check %s, which no %s-lane checker runs", lines[i], c, lane)
				}
			}
			if c == "synthetic" {
				continue // scans nothing
			}
			host, port := assetAddress(a.Asset)
			if cf.Services[host] == nil {
				t.Errorf("assets.jsonl line %d: %s scans %s, which is not a service of the deployment", lines[i], c, a.Asset)
			} else if !servedPorts(t, cf, host)[port] {
				t.Errorf("assets.jsonl line %d: %s scans %s, but %s does not listen on %s", lines[i], c, a.Asset, host, port)
			}
		}
	}
}

// assetAddress returns the host and port a network check of an asset
// connects to: a URL's, or "host[:port][/path]" with port 443.
func assetAddress(asset string) (host, port string) {
	if strings.Contains(asset, "://") {
		u, err := url.Parse(asset)
		if err != nil {
			return "", ""
		}
		port = u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		return u.Hostname(), port
	}
	hostport, _, _ := strings.Cut(asset, "/")
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		return h, p
	}
	return hostport, "443"
}

// TestAssetsAndSchedulerIntervals proves that the assets job places first
// scans with the intervals the scheduler then keeps (--interval-<plan> of
// both), so the first round is not spread over days when the scheduler
// works in minutes.
func TestAssetsAndSchedulerIntervals(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	imp, sch := serviceInvocation(t, cf, "assets"), serviceInvocation(t, cf, "scheduler")
	if imp == nil || sch == nil {
		t.Skip("assets or scheduler runs no command of the binary (TestCommands fails)")
	}
	for _, p := range scheduler.Plans {
		flag := "interval-" + string(p)
		if a, s := imp.value(flag), sch.value(flag); a != s {
			t.Errorf("--%s: assets job %q, scheduler %q", flag, a, s)
		}
	}
}
