package devstack_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/devstack"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/wan"
)

func TestMain(m *testing.M) {
	pgtest.Main(m, append(wan.LeakOptions(),
		// memberlist's probe under way at Shutdown ends on its own timer
		// (see topology's tests).
		goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))...)
}

// syncBuffer is the stack's output, written by Run and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The whole stack, small and fast, with TLS (the primary's mutual TLS with
// the edges, the scheduler's) and Kafka brokers of the caller's: scans run in both regions and land in PostgreSQL through both
// regions' edges, a big scan goes through, the printed push commands work,
// the status lines name both regions, and Stop leaves nothing behind (the
// directory is gone; TestMain checks the goroutines).
func TestStackScansThroughBothRegions(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	// Brokers of the test's (`longhaul dev --kafka-brokers`; the cmd test
	// runs the embedded one), with no topics: the scheduler creates them.
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close) // after the stack's Stop (cleanups run last first)
	const bigInsights = 3000
	st, err := devstack.Start(ctx, devstack.Config{
		DatabaseURL: url, KafkaBrokers: kf.ListenAddrs(), Ports: devstack.DefaultPorts(0), TLS: true,
		NearRTT: time.Millisecond, FarRTT: 80 * time.Millisecond,
		Assets: 120, BigAssets: 1, BigInsights: bigInsights, Interval: 3 * time.Second,
		Synthetic:  checks.SyntheticConfig{Insights: 5, Fast: 5 * time.Millisecond, Slow: 400 * time.Millisecond, SlowFraction: 0.1},
		FastBudget: 200 * time.Millisecond, AbandonAfter: 2 * time.Second, Partitions: 4, Every: 500 * time.Millisecond,
		// Budgets a loaded machine meets: a region's checkers leave for
		// another region's edges while their own are over budget, and each
		// region's edges must get its own checkers' insights here.
		Budgets: map[string]edge.Budget{
			devstack.NearRegion: {AckP99: 5 * time.Second, VisibleP99: 30 * time.Second},
			devstack.FarRegion:  {AckP99: 5 * time.Second, VisibleP99: 30 * time.Second},
		},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := st.Dir()
	t.Cleanup(func() { _ = st.Stop(ctx) }) // when the test fails early; Stop is idempotent
	var banner bytes.Buffer
	st.WriteBanner(&banner)
	for _, want := range []string{"region eu", "region us", "edge eu-1", "edge us-1", "/ui", "longhaul status --edge", "grpcurl", "certs"} {
		if !strings.Contains(banner.String(), want) {
			t.Errorf("the banner lacks %q:\n%s", want, banner.String())
		}
	}

	var out syncBuffer
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	runDone := make(chan struct{})
	go func() { defer close(runDone); st.Run(runCtx, &out) }()

	// The printed commands push to eu-1: curl as printed (when curl is
	// here), the grpcurl request's JSON over gRPC.
	if _, err := exec.LookPath("curl"); err == nil {
		b, err := exec.Command("bash", "-c", st.CurlPush()).CombinedOutput()
		if err != nil || !strings.Contains(string(b), `"accepted":"1"`) {
			t.Errorf("%s\n%v: %s", st.CurlPush(), err, b)
		}
	}
	var req longhaulv1.PushRequest
	body := strings.Replace(devstack.ExampleInsight, "OBSERVED_AT", time.Now().UTC().Format(time.RFC3339), 1)
	body = strings.Replace(body, `"first-push"`, `"grpc-push"`, 1)
	if err := protojson.Unmarshal([]byte(body), &req); err != nil {
		t.Fatalf("the example insight is not a PushRequest: %v", err)
	}
	cc, err := grpc.NewClient(st.EdgeAddrs()["eu-1"][0], st.PushDialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := longhaulv1.NewIngestClient(cc).Push(ctx, &req); err != nil || resp.GetAccepted() != 1 {
		t.Errorf("gRPC push of the example: %v, %v", resp, err)
	}
	cc.Close()

	db, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	count := func(sql string) int {
		var n int
		if err := db.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	conds := []struct{ what, sql string }{
		{"edges of eu applied", `SELECT count(*) FROM edge_ledger WHERE edge_id LIKE 'eu/%' AND applied_seq > 0`},
		{"edges of us applied", `SELECT count(*) FROM edge_ledger WHERE edge_id LIKE 'us/%' AND applied_seq > 0`},
		{"scans completed and resolved", `SELECT count(*) FROM scans WHERE completed_at IS NOT NULL AND resolved_at IS NOT NULL`},
		{"insights of the synthetic check", `SELECT count(*) FROM insights WHERE checker = 'synthetic'`},
		{"the big asset's insights", fmt.Sprintf(`SELECT count(*) / %d FROM insights WHERE asset = 'big-%[1]d.example'`, bigInsights)},
		{"the pushed examples", `SELECT count(*) / 2 FROM insights WHERE account_id = 'acct-you'`},
	}
	if _, err := exec.LookPath("curl"); err != nil {
		conds[len(conds)-1].sql = `SELECT count(*) FROM insights WHERE account_id = 'acct-you'`
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		var missing []string
		for _, c := range conds {
			if count(c.sql) == 0 {
				missing = append(missing, c.what)
			}
		}
		eu, us := st.RegionStats(devstack.NearRegion), st.RegionStats(devstack.FarRegion)
		if eu.Scans == 0 || us.Scans == 0 {
			missing = append(missing, "scans in both regions")
		}
		if len(missing) == 0 && strings.Count(out.String(), "\n") >= 4 {
			t.Logf("eu checkers %+v; us checkers %+v", eu, us)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 90s, still no %s; eu %+v, us %+v\n%s", strings.Join(missing, ", "), eu, us, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Stop ends Run too.
	if err := st.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
	select {
	case <-runDone:
	case <-time.After(5 * time.Second):
		t.Fatal("Run still running after Stop")
	}

	lines := out.String()
	for _, region := range devstack.Regions {
		re := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d ` + region + ` +scans/s +[0-9.]+ +insights/s +\d+ +applied/s +\d+ +ack p99 +\S+/5s +(ok|OVER|) +visible p99 +\S+/\S+ +(ok|OVER|) +backlog +\d+`)
		if !re.MatchString(lines) {
			t.Errorf("no status line of %s:\n%s", region, lines)
		}
	}
	t.Logf("status lines:\n%s", lines)

	if err := st.Stop(ctx); err != nil {
		t.Errorf("a second stop: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s is still there after Stop: %v", dir, err)
	}
}

// A port another process holds fails Start at once, naming the port.
func TestStartNamesATakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	ports := devstack.DefaultPorts(0)
	ports["eu-2-http"] = port
	_, err = devstack.Start(context.Background(), devstack.Config{DatabaseURL: "postgres://nowhere.invalid/x", Ports: ports})
	var pe *devstack.PortError
	if !errors.As(err, &pe) || pe.Name != "eu-2-http" || pe.Port != port {
		t.Fatalf("Start with port %d taken: %v", port, err)
	}
}

// A bad configuration is refused before anything starts, every problem
// named.
func TestStartRefusesBadConfig(t *testing.T) {
	_, err := devstack.Start(context.Background(), devstack.Config{
		Ports: map[string]int{"nope": 1, "eu-1": 7000, "eu-2": 7000}, Interval: -time.Second, FarRTT: -1})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`unknown port name "nope"`, "eu-1 and eu-2 are both 7000", "Interval", "FarRTT"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestDefaultPorts(t *testing.T) {
	p := devstack.DefaultPorts(devstack.DefaultBasePort)
	for name, want := range map[string]int{"eu-1": 7300, "eu-1-http": 7301, "eu-2": 7310, "us-1-http": 7321,
		"primary": 7400, "primary-http": 7401, "scheduler": 7500, "checkers-eu": 7600, "checkers-us": 7610, "eu-1-gossip": 7946} {
		if p[name] != want {
			t.Errorf("%s: %d, want %d", name, p[name], want)
		}
	}
	if got := devstack.DefaultPorts(8300)["primary"]; got != 8400 {
		t.Errorf("base 8300: primary on %d, want 8400", got)
	}
	for name, v := range devstack.DefaultPorts(0) {
		if v != 0 {
			t.Errorf("base 0: %s is %d", name, v)
		}
	}
	if len(p) != len(devstack.PortNames()) {
		t.Errorf("%d ports, %d names", len(p), len(devstack.PortNames()))
	}
}

func TestLine(t *testing.T) {
	now := time.Date(2026, 11, 29, 15, 4, 5, 0, time.UTC)
	st := devstack.RegionStatus{Region: "eu", ScansPerSec: 24.83, InsightsPerSec: 496.2, AppliedPerSec: 501,
		Ack:     devstack.Latency{P99: 4230 * time.Microsecond, Budget: 50 * time.Millisecond, Count: 10, Within: true},
		Visible: devstack.Latency{P99: 1310 * time.Millisecond, Budget: time.Second, Count: 10, Within: false},
		Backlog: 37, Oldest: 210 * time.Millisecond}
	want := "15:04:05 eu  scans/s   24.8  insights/s    496  applied/s    501  ack p99  4.23ms/50ms ok    visible p99   1.31s/1s  OVER  backlog      37 (oldest 210ms)"
	if got := st.Line(now); got != want {
		t.Errorf("\n got %q\nwant %q", got, want)
	}
	idle := devstack.RegionStatus{Region: "us", Ack: devstack.Latency{Budget: 50 * time.Millisecond, Within: true},
		Visible: devstack.Latency{Budget: 2 * time.Second, Within: true}}
	want = "15:04:05 us  scans/s    0.0  insights/s      0  applied/s      0  ack p99       -/50ms       visible p99       -/2s        backlog       0"
	if got := idle.Line(now); got != want {
		t.Errorf("\n got %q\nwant %q", got, want)
	}
}
