package deploy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// proxyConfig is one proxy of deploy/toxiproxy.json, as toxiproxy -config
// reads it.
type proxyConfig struct {
	Name     string `json:"name"`
	Listen   string `json:"listen"`
	Upstream string `json:"upstream"`
	Enabled  *bool  `json:"enabled,omitempty"`
}

var proxies = sync.OnceValues(func() ([]proxyConfig, error) {
	b, err := os.ReadFile("toxiproxy.json")
	if err != nil {
		return nil, err
	}
	var ps []proxyConfig
	if err := json.Unmarshal(b, &ps); err != nil {
		return nil, fmt.Errorf("toxiproxy.json: %w", err)
	}
	return ps, nil
})

func toxiproxyProxies(t *testing.T) []proxyConfig {
	t.Helper()
	ps, err := proxies()
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// links parses the toxics job's LINKS, "proxy=rtt_ms …", into proxy →
// round trip.
func links(t *testing.T, cf *composeFile) map[string]int {
	t.Helper()
	s := cf.Services["toxics"]
	if s == nil {
		t.Fatal("no toxics service")
	}
	out := map[string]int{}
	for _, l := range strings.Fields(s.Environment["LINKS"]) {
		name, rtt, _ := strings.Cut(l, "=")
		ms, err := strconv.Atoi(rtt)
		if err != nil || ms <= 0 {
			t.Errorf("toxics: LINKS item %q: want proxy=round-trip milliseconds", l)
			continue
		}
		if _, dup := out[name]; dup {
			t.Errorf("toxics: LINKS names %s twice", name)
		}
		out[name] = ms
	}
	return out
}

// TestWAN proves that every edge reaches the primary only through
// toxiproxy, on its region's proxy (wan-<region>), that every proxy leads to
// the primary's gRPC port and is given a latency by the toxics job, which
// the edges wait for; and that toxiproxy loads the mounted config and
// listens for the job's API calls.
func TestWAN(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	tp := cf.Services["toxiproxy"]
	if tp == nil {
		t.Fatal("no toxiproxy service")
	}
	byName := map[string]proxyConfig{}
	for _, p := range toxiproxyProxies(t) {
		if _, dup := byName[p.Name]; dup {
			t.Errorf("toxiproxy.json: proxy %s twice", p.Name)
		}
		byName[p.Name] = p
		if h, _, _ := strings.Cut(p.Listen, ":"); h != "0.0.0.0" {
			t.Errorf("toxiproxy.json: %s listens on %s: the edges are other containers, listen on 0.0.0.0", p.Name, p.Listen)
		}
	}

	var primaries []string
	grpc := ""
	for _, name := range cf.longhaulServices() {
		if inv := serviceInvocation(t, cf, name); inv != nil && strings.Join(inv.path, " ") == "primary" {
			primaries = append(primaries, name)
			grpc = net.JoinHostPort(name, portOf(inv.value("listen")))
		}
	}
	if len(primaries) != 1 {
		t.Fatalf("services running longhaul primary: %q, want one", primaries)
	}
	for _, p := range byName {
		if p.Upstream != grpc {
			t.Errorf("toxiproxy.json: %s leads to %s, want the primary's gRPC address %s (its --listen)", p.Name, p.Upstream, grpc)
		}
	}

	config := ""
	for _, a := range tp.Command {
		if v, ok := strings.CutPrefix(strings.TrimLeft(a, "-"), "config="); ok {
			config = v
		}
	}
	mounted := false
	for _, m := range tp.Volumes {
		mounted = mounted || (m.Type == "bind" && m.Target == config && strings.TrimPrefix(m.Source, "./") == "deploy/toxiproxy.json")
	}
	if config == "" || !mounted {
		t.Errorf("toxiproxy: command %q: want -config=<path> with deploy/toxiproxy.json mounted there", []string(tp.Command))
	}
	if !slices.Contains(tp.Command, "-host=0.0.0.0") {
		t.Errorf("toxiproxy: command %q: want -host=0.0.0.0, or the toxics job cannot reach its API", []string(tp.Command))
	}
	if h := tp.Healthcheck; h != nil {
		if test, ok := h.exec(); ok && len(test) == 3 && test[1] == "inspect" {
			if _, ok := byName[test[2]]; !ok {
				t.Errorf("toxiproxy: healthcheck inspects %s, which toxiproxy.json does not have", test[2])
			}
		}
	}

	rtts := links(t, cf)
	for name := range byName {
		if _, ok := rtts[name]; !ok {
			t.Errorf("toxics: LINKS gives proxy %s no latency", name)
		}
	}
	for name := range rtts {
		if _, ok := byName[name]; !ok {
			t.Errorf("toxics: LINKS names %s, which toxiproxy.json does not have", name)
		}
	}
	tx := cf.Services["toxics"]
	if u, err := url.Parse(tx.Environment["TOXIPROXY_URL"]); err != nil || u.Hostname() != "toxiproxy" || u.Port() != "8474" {
		t.Errorf("toxics: TOXIPROXY_URL %q: want http://toxiproxy:8474", tx.Environment["TOXIPROXY_URL"])
	}
	if len(tx.Entrypoint) != 2 || tx.Entrypoint[0] != "/bin/sh" {
		t.Errorf("toxics: entrypoint %q: want [/bin/sh, <mounted toxics.sh>]", []string(tx.Entrypoint))
	} else {
		mounted := false
		for _, m := range tx.Volumes {
			mounted = mounted || (m.Type == "bind" && m.Target == tx.Entrypoint[1] && strings.TrimPrefix(m.Source, "./") == "deploy/toxics.sh")
		}
		if !mounted {
			t.Errorf("toxics: runs %s, where deploy/toxics.sh is not mounted", tx.Entrypoint[1])
		}
	}

	used := map[string]bool{}
	for _, name := range cf.longhaulServices() {
		inv := serviceInvocation(t, cf, name)
		if inv == nil || strings.Join(inv.path, " ") != "edge" {
			continue
		}
		region := inv.value("region")
		p, ok := byName["wan-"+region]
		if !ok {
			t.Errorf("%s: region %s has no proxy wan-%s in toxiproxy.json", name, region, region)
			continue
		}
		used[p.Name] = true
		if want := "toxiproxy:" + portOf(p.Listen); inv.value("primary") != want {
			t.Errorf("%s: --primary=%s, want %s (wan-%s): the edge would reach the primary without the WAN's latency", name, inv.value("primary"), want, region)
		}
		if cf.Services[name].DependsOn["toxics"] != "service_completed_successfully" {
			t.Errorf("%s: does not wait for the toxics job to complete: it could ship before the WAN has its latency", name)
		}
	}
	for name := range byName {
		if !used[name] {
			t.Errorf("toxiproxy.json: no edge uses proxy %s", name)
		}
	}
}

// TestToxicsScript runs deploy/toxics.sh, with the compose file's LINKS,
// against toxiproxy (the version of go.mod, which is the image's) started
// in-process from deploy/toxiproxy.json: every proxy gets half its round
// trip as latency on each direction; a second run (a second `docker compose
// up`) leaves the same toxics, not twice as many; a proxy that is not there
// or a round trip that is not a number fails the job, and so keeps the
// edges from starting.
func TestToxicsScript(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"sh", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s here: %v", tool, err)
		}
	}
	cf := loadCompose(t)
	rtts := links(t, cf)

	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	var local []proxyConfig
	for _, p := range toxiproxyProxies(t) {
		p.Listen = "127.0.0.1:0" // not the config's fixed ports: tests run side by side
		local = append(local, p)
	}
	js, err := json.Marshal(local)
	if err != nil {
		t.Fatal(err)
	}
	started, err := server.Collection.PopulateJson(server, bytes.NewReader(js))
	for _, p := range started {
		t.Cleanup(p.Stop)
	}
	if err != nil {
		t.Fatalf("toxiproxy rejects deploy/toxiproxy.json: %v", err)
	}
	api := httptest.NewServer(server.Routes())
	t.Cleanup(api.Close)

	run := func(links string) (string, error) {
		cmd := exec.Command("sh", "toxics.sh")
		cmd.Env = append(os.Environ(), "LINKS="+links, "TOXIPROXY_URL="+api.URL,
			"NO_PROXY=127.0.0.1", "no_proxy=127.0.0.1")
		cmd.WaitDelay = 10 * time.Second
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for round := 1; round <= 2; round++ {
		if out, err := run(cf.Services["toxics"].Environment["LINKS"]); err != nil {
			t.Fatalf("run %d: %v\n%s", round, err, out)
		}
		for name, rtt := range rtts {
			got := toxicsOf(t, api.URL, name)
			want := []toxic{
				{Type: "latency", Stream: "downstream", Toxicity: 1, Attributes: map[string]float64{"latency": float64(rtt / 2), "jitter": 0}},
				{Type: "latency", Stream: "upstream", Toxicity: 1, Attributes: map[string]float64{"latency": float64(rtt / 2), "jitter": 0}},
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("run %d: %s toxics %+v, want %+v", round, name, got, want)
			}
		}
	}
	for _, bad := range []string{"no-such-proxy=10", "wan-eu=ten", "wan-eu"} {
		if out, err := run(bad); err == nil {
			t.Errorf("LINKS=%q: the script succeeded:\n%s", bad, out)
		}
	}
}

type toxic struct {
	Type       string             `json:"type"`
	Stream     string             `json:"stream"`
	Toxicity   float64            `json:"toxicity"`
	Attributes map[string]float64 `json:"attributes"`
}

// toxicsOf returns a proxy's toxics, by stream.
func toxicsOf(t *testing.T, api, proxy string) []toxic {
	t.Helper()
	resp, err := http.Get(api + "/proxies/" + proxy + "/toxics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ts []toxic
	if err := json.NewDecoder(resp.Body).Decode(&ts); err != nil {
		t.Fatalf("%s toxics: %v", proxy, err)
	}
	slices.SortFunc(ts, func(a, b toxic) int { return strings.Compare(a.Stream, b.Stream) })
	return ts
}

// moduleVersion returns the version of a module in the build list, as
// go.mod pins it.
func moduleVersion(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", path).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", path, err)
	}
	return strings.TrimSpace(string(out))
}

// checkClusterID checks a KRaft cluster id: a UUID in unpadded URL-safe
// base64, as kafka-storage random-uuid prints, or kafka-storage format
// refuses it.
func checkClusterID(id string) error {
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(b) != 16 {
		return fmt.Errorf("%q is not a UUID in unpadded URL-safe base64 (kafka-storage random-uuid makes one)", id)
	}
	return nil
}
