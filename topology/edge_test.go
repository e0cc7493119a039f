package topology_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/primary"
	"github.com/longhaul/longhaul/pushclient"
	"github.com/longhaul/longhaul/topology"
)

// childEnv, when set, makes the test binary run an edge (see TestMain): its
// value is the edge's configuration in JSON.
const childEnv = "LONGHAUL_TEST_TOPOLOGY_EDGE"

// leakOptions ignore memberlist's goroutines that outlive Shutdown, and
// only those. A probe under way when a member shuts down waits for its ack
// handler's timer (ProbeInterval, scaled by the Lifeguard awareness up to
// AwarenessMaxMultiplier: 1.6s in the local profile) and ends then:
// memberlist's probeNode does not watch its shutdown channel.
var leakOptions = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
}

func TestMain(m *testing.M) {
	if raw := os.Getenv(childEnv); raw != "" {
		os.Exit(runChildEdge(raw))
	}
	pgtest.Main(m, leakOptions...)
}

type childConfig struct {
	Region, NodeID, DataDir, Primary, Listen, HTTPListen, Gossip string
	Join                                                         []string
}

// runChildEdge runs an edge that gossips until SIGTERM (or SIGKILL).
func runChildEdge(raw string) int {
	var c childConfig
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		fmt.Fprintln(os.Stderr, "child edge:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg := edge.Config{Region: c.Region, NodeID: c.NodeID, DataDir: c.DataDir, Primary: c.Primary,
		Listen: c.Listen, HTTPListen: c.HTTPListen, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	cfg.Shipper.MaxBatchAge = 20 * time.Millisecond
	cfg.Gossip = topology.Config{BindAddr: c.Gossip, Join: c.Join, Profile: topology.ProfileLocal}
	svc, err := edge.Start(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child edge:", err)
		return 1
	}
	<-ctx.Done()
	if err := svc.Stop(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "child edge:", err)
		return 1
	}
	return 0
}

// childEdge is an edge running as a child process of the test.
type childEdge struct {
	t   *testing.T
	cfg childConfig
	cmd *exec.Cmd
}

func (c *childEdge) start() {
	c.t.Helper()
	raw, _ := json.Marshal(c.cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.cmd = cmd
	waitFor(c.t, 20*time.Second, "the child edge up", func() (bool, string) {
		resp, err := http.Get("http://" + c.cfg.HTTPListen + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return true, ""
	})
}

func (c *childEdge) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	_ = c.cmd.Wait()
}

// freeAddr is a loopback address with a port free for TCP and UDP now.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

// waitFor polls cond every 10ms until it holds, or fails t after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after %s", what, state, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startEdge starts an edge in this process, stopped when t ends.
func startEdge(t *testing.T, region, id, primaryAddr string, gossip topology.Config) *edge.Service {
	t.Helper()
	cfg := edge.Config{Region: region, NodeID: id, DataDir: t.TempDir(), Primary: primaryAddr,
		Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Gossip: gossip}
	cfg.Shipper.MaxBatchAge = 20 * time.Millisecond
	e, err := edge.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	return e
}

func insights(scan string, n int) []*longhaulv1.Insight {
	observed := timestamppb.New(time.Now().Add(-time.Minute))
	out := make([]*longhaulv1.Insight, n)
	for i := range out {
		details, _ := structpb.NewStruct(map[string]any{"i": i})
		out[i] = &longhaulv1.Insight{AccountId: "acme", Asset: "www.example.com", Kind: "tls.expiry",
			Subject: fmt.Sprintf("%s-%d", scan, i), Severity: longhaulv1.Severity_HIGH, Details: details,
			ObservedAt: observed, ScanId: scan, Checker: "tls"}
	}
	return out
}

// topologyJSON is GET /v1/topology's answer, as a client without the
// protobuf types reads it.
type topologyJSON struct {
	Self    string `json:"self"`
	Members []struct {
		Name           string `json:"name"`
		Region         string `json:"region"`
		NodeID         string `json:"node_id"`
		GRPC           string `json:"grpc"`
		HTTP           string `json:"http"`
		State          string `json:"state"`
		BacklogRecords string `json:"backlog_records"` // int64: a string in protobuf's JSON
		WithinBudget   bool   `json:"within_budget"`
		Full           bool   `json:"full"`
		Draining       bool   `json:"draining"`
		Updated        string `json:"updated"`
	} `json:"members"`
	Regions []struct {
		Region string `json:"region"`
		Alive  int    `json:"alive"`
		Dead   int    `json:"dead"`
	} `json:"regions"`
}

func getTopology(t *testing.T, httpAddr string) topologyJSON {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/v1/topology")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/topology: %d %s", resp.StatusCode, body)
	}
	var tj topologyJSON
	if err := json.Unmarshal(body, &tj); err != nil {
		t.Fatalf("GET /v1/topology: %v in %s", err, body)
	}
	return tj
}

// TestEdgeAlone: an edge that gossips with no one answers GET /v1/topology
// and ListMembers with itself alone, its backlog included.
func TestEdgeAlone(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	nowhere := ln.Addr().String() // a primary that is not there: the insights stay in the WAL
	ln.Close()
	e := startEdge(t, "eu", "n1", nowhere, topology.Config{})
	cc, err := grpc.NewClient(e.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := longhaulv1.NewIngestClient(cc).Push(context.Background(), &longhaulv1.PushRequest{Insights: insights("alone", 3)}); err != nil {
		t.Fatal(err)
	}
	tj := getTopology(t, e.HTTPAddr())
	if tj.Self != "eu/n1" || len(tj.Members) != 1 || len(tj.Regions) != 1 {
		t.Fatalf("GET /v1/topology: %+v", tj)
	}
	m := tj.Members[0]
	if m.Name != "eu/n1" || m.Region != "eu" || m.NodeID != "n1" || m.GRPC != e.Addr() || m.HTTP != e.HTTPAddr() ||
		m.State != "ALIVE" || m.BacklogRecords != "3" || !m.WithinBudget || m.Full || m.Draining || m.Updated == "" {
		t.Errorf("member %+v", m)
	}
	if r := tj.Regions[0]; r.Region != "eu" || r.Alive != 1 {
		t.Errorf("region %+v", r)
	}
	resp, err := longhaulv1.NewTopologyClient(cc).ListMembers(context.Background(), &longhaulv1.ListMembersRequest{})
	if err != nil || len(resp.GetMembers()) != 1 || resp.GetMembers()[0].GetBacklogRecords() != 3 {
		t.Fatalf("ListMembers: %v, %v", resp, err)
	}
}

// TestEdgesRouteAroundKilled: three edges in two regions, one of them a
// child process, form one cluster; each lists all three (GET
// /v1/topology, ListMembers). A push client in the child's region pushes to
// it. The child is SIGKILLed: pushes go on through the other region at
// once, the others declare it dead within the detection bound, and once it
// is restarted the client comes back to it. Every insight reaches
// PostgreSQL.
func TestEdgesRouteAroundKilled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.URL(t)
	p, err := primary.Start(ctx, primary.Config{DatabaseURL: url, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	db, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)

	usC := startEdge(t, "us", "c", p.Addr(), topology.Config{BindAddr: "127.0.0.1:0", Profile: topology.ProfileLocal})
	seed := []string{usC.Topology().Addr()}
	usD := startEdge(t, "us", "d", p.Addr(), topology.Config{BindAddr: "127.0.0.1:0", Profile: topology.ProfileLocal, Join: seed})
	child := &childEdge{t: t, cfg: childConfig{Region: "eu", NodeID: "b", DataDir: t.TempDir(), Primary: p.Addr(),
		Listen: freeAddr(t), HTTPListen: freeAddr(t), Gossip: freeAddr(t), Join: seed}}
	child.start()
	t.Cleanup(child.kill)
	observers := []*edge.Service{usC, usD}
	states := func(e *edge.Service) map[string]topology.State {
		out := map[string]topology.State{}
		for _, m := range e.Topology().Members() {
			out[m.Name] = m.State
		}
		return out
	}
	all := map[string]topology.State{"eu/b": topology.StateAlive, "us/c": topology.StateAlive, "us/d": topology.StateAlive}
	waitFor(t, 20*time.Second, "one cluster of three", func() (bool, string) {
		for _, o := range observers {
			if s := states(o); !mapsEqual(s, all) {
				return false, fmt.Sprint(s)
			}
		}
		tj := getTopology(t, child.cfg.HTTPListen)
		return len(tj.Members) == 3, fmt.Sprintf("the child lists %+v", tj.Members)
	})

	tj := getTopology(t, usC.HTTPAddr())
	var names, regions []string
	for _, m := range tj.Members {
		names, regions = append(names, m.Name), append(regions, m.Region)
		if m.State != "ALIVE" || m.GRPC == "" || m.HTTP == "" {
			t.Errorf("member %+v", m)
		}
	}
	if tj.Self != "us/c" || !slices.Equal(names, []string{"eu/b", "us/c", "us/d"}) || !slices.Equal(regions, []string{"eu", "us", "us"}) ||
		len(tj.Regions) != 2 || tj.Regions[0].Alive != 1 || tj.Regions[1].Alive != 2 {
		t.Fatalf("GET /v1/topology on us/c: %+v", tj)
	}
	if tj.Members[0].GRPC != child.cfg.Listen {
		t.Errorf("eu/b advertises %s, listens on %s", tj.Members[0].GRPC, child.cfg.Listen)
	}

	picker, err := topology.NewPicker(topology.PickerConfig{Region: "eu", Seeds: []string{usD.Addr()},
		RefreshInterval: 100 * time.Millisecond, RTTInterval: 200 * time.Millisecond, Timeout: time.Second,
		Cooldown: 500 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = picker.Close() })
	client, err := pushclient.New(pushclient.Config{Picker: picker, Logger: slog.New(slog.DiscardHandler), Metrics: prometheus.NewRegistry(),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, ProgressTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	waitFor(t, 10*time.Second, "the picker preferring eu/b", func() (bool, string) {
		r := picker.Ranked()
		return len(r) == 3 && r[0] == child.cfg.Listen, fmt.Sprint(r)
	})
	push := func(scan string) pushclient.Result {
		t.Helper()
		res, err := client.Push(ctx, insights(scan, 200))
		if err != nil {
			t.Fatalf("push %s: %v", scan, err)
		}
		return res
	}
	if res := push("before"); res.LastEdge != child.cfg.Listen {
		t.Errorf("push before the kill went to %v, want eu/b at %s", res.Edges, child.cfg.Listen)
	}

	killed := time.Now()
	child.kill()
	res := push("during")
	if slices.Contains([]string{usC.Addr(), usD.Addr()}, res.LastEdge) {
		t.Logf("push right after the kill: %d attempts, acknowledged by %s after %s", res.Attempts, res.LastEdge, time.Since(killed).Round(time.Millisecond))
	} else {
		t.Errorf("push right after the kill acknowledged by %s, want a us edge", res.LastEdge)
	}
	bound := topology.Config{Profile: topology.ProfileLocal}.DetectionBound(3)
	const slack = time.Second
	waitFor(t, bound+slack, "eu/b dead on both us edges", func() (bool, string) {
		for _, o := range observers {
			if s := states(o)["eu/b"]; s != topology.StateDead {
				return false, fmt.Sprintf("%s sees it %s", o.Topology().Name(), s)
			}
		}
		return true, ""
	})
	t.Logf("eu/b declared dead by both us edges %s after SIGKILL (bound %s for 3 members)", time.Since(killed).Round(time.Millisecond), bound)
	waitFor(t, 10*time.Second, "the picker dropping eu/b", func() (bool, string) {
		return !slices.Contains(picker.Ranked(), child.cfg.Listen), fmt.Sprint(picker.Ranked())
	})
	if res := push("dead"); res.Attempts != 1 || res.LastEdge == child.cfg.Listen {
		t.Errorf("push while eu/b is dead: %+v, want one attempt on a us edge", res)
	}

	// Restarted on its address and data directory, it rejoins (refuting
	// its death) and gets the pushes again.
	child.start()
	waitFor(t, 20*time.Second, "eu/b alive again and first for the picker", func() (bool, string) {
		for _, o := range observers {
			if s := states(o)["eu/b"]; s != topology.StateAlive {
				return false, fmt.Sprintf("%s sees it %s", o.Topology().Name(), s)
			}
		}
		r := picker.Ranked()
		return len(r) == 3 && r[0] == child.cfg.Listen, fmt.Sprint(r)
	})
	waitFor(t, 10*time.Second, "a push acknowledged by eu/b again", func() (bool, string) {
		res := push("after")
		return res.LastEdge == child.cfg.Listen, res.LastEdge
	})

	for _, scan := range []string{"before", "during", "dead", "after"} {
		waitFor(t, 30*time.Second, "the insights of "+scan+" in PostgreSQL", func() (bool, string) {
			var n int
			if err := db.QueryRow(ctx, `SELECT count(*) FROM insights WHERE scan_id = $1`, scan).Scan(&n); err != nil {
				return false, err.Error()
			}
			return n == 200, fmt.Sprint(n)
		})
	}
}

func mapsEqual(a, b map[string]topology.State) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

var _ pushclient.Picker = (*topology.Picker)(nil)
