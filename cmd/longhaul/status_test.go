package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/topology"
)

// statusCluster is two real edges in two regions gossiping, whose primary
// is not there (what they take stays in their WALs: a backlog), and a
// third member, us/ghost, that gossips but whose HTTP address takes
// connections and never answers. eu's visible budget is 200ms, so with
// insights pending it is over it; us's is a minute, and it has none: it is
// within. Both have an ack budget of 10s, so that a loaded machine does
// not make them miss it.
type statusCluster struct {
	eu, us *edge.Service
}

func startStatusCluster(t *testing.T) *statusCluster {
	t.Helper()
	nowhere := closedAddr(t)
	gossip := func(join ...string) topology.Config {
		return topology.Config{BindAddr: "127.0.0.1:0", Profile: topology.ProfileLocal, Join: join}
	}
	startEdge := func(region, id string, visible time.Duration, g topology.Config) *edge.Service {
		cfg := edge.Config{Region: region, NodeID: id, DataDir: t.TempDir(), Primary: nowhere,
			Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Gossip: g,
			Budget: edge.Budget{AckP99: 10 * time.Second, VisibleP99: visible}}
		cfg.Shipper.MaxBatchAge = 20 * time.Millisecond
		e, err := edge.Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.Stop(context.Background()) })
		return e
	}
	eu := startEdge("eu", "n1", 200*time.Millisecond, gossip())
	seed := eu.Topology().Addr()
	us := startEdge("us", "n2", time.Minute, gossip(seed))

	silent, err := net.Listen("tcp", "127.0.0.1:0") // never accepts: requests hang
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	gc := gossip(seed)
	gc.Region, gc.NodeID, gc.GRPCAddr, gc.HTTPAddr = "us", "ghost", silent.Addr().String(), silent.Addr().String()
	gc.Logger = slog.New(slog.DiscardHandler)
	ghost, err := topology.Start(gc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ghost.Shutdown() })

	for i := range 3 {
		resp, err := http.Post("http://"+eu.HTTPAddr()+"/v1/insights:push", "application/json", strings.NewReader(fmt.Sprintf(
			`{"insights":[{"account_id":"acme","asset":"a","kind":"k","subject":"s%d","severity":"HIGH","observed_at":%q,"scan_id":"x","checker":"c"}]}`,
			i, time.Now().Format(time.RFC3339Nano))))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("push: %s", resp.Status)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ok []string
		for _, m := range eu.Topology().Members() {
			if m.State == topology.StateAlive && (m.Name != "eu/n1" || m.Status.BacklogRecords == 3 && !m.Status.WithinBudget) {
				ok = append(ok, m.Name)
			}
		}
		if len(ok) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster of three: eu/n1 sees %v", eu.Topology().Members())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &statusCluster{eu: eu, us: us}
}

func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// lineOf returns the line of out that starts with prefix.
func lineOf(out, prefix string) string {
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// TestStatus: longhaul status against real edges prints the regions, the
// nodes (the one that does not answer marked so) and each region's
// stages; --json is the same data, machine-readable; --watch redraws; an
// edge that is not there is an error.
func TestStatus(t *testing.T) {
	t.Parallel()
	c := startStatusCluster(t)

	start := time.Now()
	code, out, stderr := runCLI("status", "--edge", c.eu.HTTPAddr(), "--timeout", "1500ms")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s: the member that does not answer held it up beyond --timeout 1.5s", took)
	}
	t.Logf("longhaul status:\n%s", out)
	for _, want := range []struct{ prefix, re string }{
		{"Cluster as edge", `^Cluster as edge eu/n1 \(http://127\.0\.0\.1:\d+/\)`},
		{"OVER BUDGET", `^OVER BUDGET: eu; 1 not answering$`},
		{"eu ", `^eu\s+1/0/0\s+3 records, [\d.]+ (B|KiB)\s+\S+s\s+OVER: oldest pending \S+s > visible 200ms \(eu/n1\)$`},
		{"us ", `^us\s+2/0/0\s+0 records, 0 B\s+-\s+within \[1 of 2 no answer\]$`},
		{"eu/n1", `^eu/n1 \*\s+eu\s+alive\s+3 records.*\s+OVER: visible .*\s+ok$`},
		{"us/n2", `^us/n2\s+us\s+alive\s+0 records.*\s+within\s+ok$`},
		{"us/ghost", `^us/ghost\s+us\s+alive\s+.*NO ANSWER: no answer within 1.5s$`},
		{"STAGES eu", `^STAGES eu: 1 of 1 members reporting; p99 over the last 1m0s`},
		{"STAGES us", `^STAGES us: 1 of 2 members reporting`},
	} {
		if l := lineOf(out, want.prefix); !regexp.MustCompile(want.re).MatchString(l) {
			t.Errorf("line %q, want it to match %s", l, want.re)
		}
	}
	for _, stage := range []string{"validation", "wal_sync", "ack", "queue_wait", "ship_round_trip", "apply", "end_to_end"} {
		if n := strings.Count(out, "\n"+stage+" "); n != 2 {
			t.Errorf("stage %s: %d rows, want one per region", stage, n)
		}
	}
	if l := lineOf(out, "ack "); !regexp.MustCompile(`^ack\s+\S+\s+\S+\s+10s\s+inside\s+eu/n1\s+3$`).MatchString(l) {
		t.Errorf("eu's ack stage: %q", l)
	}

	// The same as JSON, the edge's URL given whole.
	code, out, stderr = runCLI("status", "--edge", "http://"+c.eu.HTTPAddr(), "--timeout", "1500ms", "--json")
	if code != 0 {
		t.Fatalf("--json: exit %d\n%s", code, stderr)
	}
	var cl edge.Cluster
	if err := json.Unmarshal([]byte(out), &cl); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if cl.Edge != "eu/n1" || len(cl.Topology.GetMembers()) != 3 || len(cl.Budgets) != 3 || len(cl.Regions) != 2 {
		t.Fatalf("--json: %s", out)
	}
	if b, _ := cl.Member("us/n2"); b.Report == nil || b.Report.Region != "us" || len(b.Report.Stages) != 7 {
		t.Errorf("--json: us/n2's budget %+v", b)
	}
	if b, _ := cl.Member("us/ghost"); b.Report != nil || b.Error != "no answer within 1.5s" {
		t.Errorf("--json: us/ghost's budget %+v", b)
	}
	if r, _ := cl.Region("eu"); r.Reporting != 1 || len(r.Stages) != 7 || r.Stages[2].Stage != "ack" || r.Stages[2].Count != 3 {
		t.Errorf("--json: region eu %+v", r)
	}

	// --watch redraws until interrupted.
	// (Each draw waits --timeout for us/ghost.)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var wout, werr bytes.Buffer
	if code := run(ctx, []string{"status", "--edge", c.us.HTTPAddr(), "--timeout", "1s", "--watch", "200ms"}, &wout, &werr); code != 0 {
		t.Fatalf("--watch: exit %d\n%s", code, werr.String())
	}
	if n := strings.Count(wout.String(), clearScreen+"Cluster as edge us/n2"); n < 2 {
		t.Errorf("--watch: %d draws in 4s, want 2 or more\n%s\n%s", n, wout.String(), werr.String())
	}

	if code, _, stderr := runCLI("status", "--edge", closedAddr(t)); code != 1 || !strings.Contains(stderr, "topology") {
		t.Errorf("an edge that is not there: exit %d, %q", code, stderr)
	}
	if code, _, _ := runCLI("status", "--edge", "ftp://x"); code != 1 {
		t.Errorf("an ftp URL: exit %d", code)
	}
}

// TestStatusTLS: with --tls-ca, longhaul status speaks https to host:port
// and trusts that CA. (An edge behind a TLS proxy stands for an edge
// serving TLS; the other members, plain HTTP, are marked as not
// answering over https.)
func TestStatusTLS(t *testing.T) {
	t.Parallel()
	c := startStatusCluster(t)
	target, _ := url.Parse("http://" + c.eu.HTTPAddr())
	proxy := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	proxy.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below
	proxy.StartTLS()
	t.Cleanup(proxy.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: proxy.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	hostPort := strings.TrimPrefix(proxy.URL, "https://")
	code, out, stderr := runCLI("status", "--edge", hostPort, "--tls-ca", ca, "--timeout", "1500ms", "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	var cl edge.Cluster
	if err := json.Unmarshal([]byte(out), &cl); err != nil {
		t.Fatal(err)
	}
	if b, _ := cl.Member("eu/n1"); cl.Edge != "eu/n1" || b.Report == nil {
		t.Errorf("over TLS: edge %s, its budget %+v", cl.Edge, b)
	}
	if b, _ := cl.Member("us/n2"); b.Report != nil || b.Error == "" {
		t.Errorf("a plain HTTP member asked over https: %+v", b)
	}
	// Without the CA, the proxy's certificate is not trusted.
	if code, _, stderr := runCLI("status", "--edge", proxy.URL, "--timeout", "10s"); code != 1 || !strings.Contains(stderr, "certificate") {
		t.Errorf("without --tls-ca: exit %d, %q", code, stderr)
	}
}
