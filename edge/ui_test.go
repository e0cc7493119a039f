package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/topology"
)

// uiCluster is two edges in two regions shipping to one primary, and a
// third member, us/ghost, that gossips but whose HTTP address refuses
// connections.
type uiCluster struct {
	eu, us *system
	ghost  *topology.Node
}

func startUICluster(t *testing.T) *uiCluster {
	t.Helper()
	// Cleanups run last first: this one, after the members stopped, waits
	// for memberlist's goroutines that outlive Shutdown by a probe timeout
	// (see topology's leakOptions), so that the package's leak check
	// does not see them.
	t.Cleanup(func() { waitGoroutinesGone(t, "github.com/hashicorp/memberlist.", 5*time.Second) })
	url := pgtest.URL(t)
	p := startPrimary(t, url, "127.0.0.1:0")
	gossip := func(join ...string) topology.Config {
		return topology.Config{BindAddr: "127.0.0.1:0", Profile: topology.ProfileLocal, Join: join}
	}
	eu := startSystemTBWith(t, Config{Region: "eu", NodeID: "n1", Primary: p.Addr(), Gossip: gossip()}, url)
	seed := eu.edge.Topology().Addr()
	us := startSystemTBWith(t, Config{Region: "us", NodeID: "n2", Primary: p.Addr(), Gossip: gossip(seed)}, url)
	closed := closedAddr(t)
	gc := gossip(seed)
	gc.Region, gc.NodeID, gc.GRPCAddr, gc.HTTPAddr, gc.Logger = "us", "ghost", closed, closed, slog.New(slog.DiscardHandler)
	ghost, err := topology.Start(gc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ghost.Shutdown() })
	c := &uiCluster{eu: eu, us: us, ghost: ghost}
	eventually(t, "one cluster of three on both edges", func() (bool, string) {
		for _, e := range []*Service{eu.edge, us.edge} {
			var alive []string
			for _, m := range e.Topology().Members() {
				if m.State == topology.StateAlive {
					alive = append(alive, m.Name)
				}
			}
			slices.Sort(alive)
			if !slices.Equal(alive, []string{"eu/n1", "us/ghost", "us/n2"}) {
				return false, fmt.Sprintf("%s sees %v alive", e.Topology().Name(), alive)
			}
		}
		return true, ""
	})
	// Insights through both edges, applied, so that every stage has
	// observations.
	for i, s := range []*system{eu, us} {
		var batch []*longhaulv1.Insight
		for j := range 50 {
			batch = append(batch, insight(fmt.Sprintf("ui-%d", i), "tls.expiry", fmt.Sprintf("%d-%d", i, j), time.Now().Add(-time.Minute)))
		}
		if _, err := s.ingest.Push(context.Background(), &longhaulv1.PushRequest{Insights: batch}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the insights applied, every stage observed on both edges", func() (bool, string) {
		if n := eu.count(t, `SELECT count(*) FROM insights WHERE scan_id LIKE 'ui-%'`); n != 100 {
			return false, fmt.Sprint(n, " of 100 applied")
		}
		for _, s := range []*system{eu, us} {
			for _, st := range s.edge.Budget().Stages {
				if st.Count == 0 {
					return false, fmt.Sprintf("no %s observed on %s", st.Stage, s.edge.Topology().Name())
				}
			}
		}
		return true, ""
	})
	return c
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// waitGoroutinesGone waits until no goroutine runs a function whose name
// starts with prefix.
func waitGoroutinesGone(t *testing.T, prefix string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if !bytes.Contains(buf[:n], []byte(prefix)) {
			return
		}
		if time.Now().After(deadline) {
			t.Logf("goroutines of %s still running after %s", prefix, timeout)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStatusPage: on a cluster of two edges in two regions and a member
// that does not answer (one set-up: it is not light),
//
//   - GET /v1/cluster lists every member with its budget report, marks the
//     one that does not answer, and sums up each region; FetchCluster,
//     from outside, collects the same; / redirects to the status page,
//     which loads nothing from elsewhere (testCluster);
//   - headless Chromium shows the page, and it updates
//     (testPageInChromium).
func TestStatusPage(t *testing.T) {
	t.Parallel()
	c := startUICluster(t)
	t.Run("cluster", func(t *testing.T) { testCluster(t, c) })
	t.Run("chromium", func(t *testing.T) { testPageInChromium(t, c) })
}

func testCluster(t *testing.T, c *uiCluster) {
	resp, err := http.Get(c.eu.http + "/v1/cluster")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/cluster: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	// The topology in it is GET /v1/topology's JSON (protojson: enums as
	// names, int64 as strings).
	var raw struct {
		Topology struct {
			Members []struct {
				Name, State    string
				BacklogRecords string `json:"backlog_records"`
			}
		}
	}
	if err := json.Unmarshal(body, &raw); err != nil || len(raw.Topology.Members) != 3 || raw.Topology.Members[0].State != "ALIVE" ||
		raw.Topology.Members[0].BacklogRecords == "" {
		t.Fatalf("GET /v1/cluster: topology %+v, %v in %s", raw.Topology, err, body)
	}
	var fromEU Cluster
	if err := json.Unmarshal(body, &fromEU); err != nil {
		t.Fatal(err)
	}
	checkCluster(t, &fromEU, "eu/n1")

	fromUS, err := FetchCluster(context.Background(), nil, c.us.edge.HTTPAddr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	checkCluster(t, fromUS, "us/n2")
	if _, err := FetchCluster(context.Background(), nil, "http://"+closedAddr(t), time.Second); err == nil {
		t.Error("FetchCluster from an address nothing listens on: no error")
	}

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noRedirect.Get(c.eu.http + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui" {
		t.Errorf("GET /: %d to %q, want 302 to /ui", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = http.Get(c.eu.http + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'sha256-") {
		t.Fatalf("GET /ui: %d %q, CSP %q", resp.StatusCode, resp.Header.Get("Content-Type"), csp)
	}
	// Nothing from the internet: no external script, style, font or image.
	if m := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?\s*(https?:)?//|@import|url\(|@font-face`).Find(page); m != nil {
		t.Errorf("the page refers to something outside: %s", m)
	}
}

func checkCluster(t *testing.T, c *Cluster, self string) {
	t.Helper()
	if c.Edge != self || c.Time.IsZero() || len(c.Topology.GetMembers()) != 3 || len(c.Budgets) != 3 {
		t.Fatalf("%s: cluster %s at %v, %d members, %d budgets", self, c.Edge, c.Time, len(c.Topology.GetMembers()), len(c.Budgets))
	}
	for _, name := range []string{"eu/n1", "us/n2"} {
		b, ok := c.Member(name)
		if !ok || b.Report == nil || b.Error != "" || b.Report.Node != strings.TrimPrefix(name, b.Region+"/") || len(b.Report.Stages) != int(numStages) {
			t.Errorf("%s: %s's budget: %+v", self, name, b)
		}
	}
	if b, ok := c.Member("us/ghost"); !ok || b.Report != nil || !strings.Contains(b.Error, "refused") {
		t.Errorf("%s: us/ghost's budget: %+v, want connection refused", self, b)
	}
	for _, want := range []struct {
		region                 string
		reporting, unreachable int
	}{{"eu", 1, 0}, {"us", 1, 1}} {
		r, ok := c.Region(want.region)
		if !ok || r.Reporting != want.reporting || r.Unreachable != want.unreachable || (r.Verdict != "within" && r.Verdict != "over") ||
			len(r.Stages) != int(numStages) || r.Visible.Member == "" || r.Visible.BudgetSeconds == 0 {
			t.Errorf("%s: region %s: %+v", self, want.region, r)
			continue
		}
		for _, st := range r.Stages {
			if st.Count == 0 || st.Member != want.region+map[string]string{"eu": "/n1", "us": "/n2"}[want.region] {
				t.Errorf("%s: region %s, stage %+v: no observation, or from the wrong member", self, want.region, st)
			}
		}
	}
}

// testPageInChromium: headless Chromium loads /ui from an edge of a
// cluster of two regions and, within a few seconds of (virtual) time, the
// page shows both regions, every member (the one that does not answer
// marked so), a row per stage and region, sparklines, and a refresh
// counter that went up: the page polls the edge and redraws. Without
// JavaScript it says so and points to the JSON.
func testPageInChromium(t *testing.T, c *uiCluster) {
	chromium := findChromium(t)
	url := c.eu.http + "/ui"

	dom := dumpDOM(t, chromium, url, 6*time.Second)
	m := regexp.MustCompile(`id="refreshes" data-count="(\d+)"`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no refresh counter in the page:\n%s", dom)
	}
	if n, _ := strconv.Atoi(m[1]); n < 2 {
		t.Fatalf("%d refreshes after 6s of virtual time, want at least 2:\n%s", n, dom)
	}
	t.Logf("refreshes after 6s of virtual time: %s", m[1])
	if !regexp.MustCompile(`<time id="updated" datetime="\d{4}-\d\d-\d\dT`).MatchString(dom) {
		t.Errorf("no time of the last update:\n%s", dom)
	}
	for _, region := range []string{"eu", "us"} {
		if !strings.Contains(dom, `data-region="`+region+`" aria-label="Region `+region+`"`) {
			t.Errorf("no card for region %s", region)
		}
		for _, stage := range stageNames {
			if !strings.Contains(dom, `data-stage="`+stage+`" data-region="`+region+`"`) {
				t.Errorf("no row for stage %s in region %s", stage, region)
			}
		}
	}
	for _, member := range []string{"eu/n1", "us/n2", "us/ghost"} {
		row := regexp.MustCompile(`<tr[^>]*data-member="` + regexp.QuoteMeta(member) + `"[\s\S]*?</tr>`).FindString(dom)
		switch {
		case row == "":
			t.Errorf("no row for member %s", member)
		case member == "us/ghost" && !strings.Contains(row, "no answer"):
			t.Errorf("us/ghost not marked as not answering: %s", row)
		case member != "us/ghost" && !strings.Contains(row, "answered"):
			t.Errorf("%s not marked as answering: %s", member, row)
		}
	}
	if !strings.Contains(dom, "<polyline") {
		t.Errorf("no sparkline with two points or more")
	}
	if !strings.Contains(dom, `<span id="error" class="error" role="status"></span>`) {
		t.Errorf("a refresh failed:\n%s", dom)
	}

	// Without JavaScript (--dump-dom needs it, so through the DevTools
	// protocol): the message shows, the empty dashboard stays hidden.
	noJS, message := loadWithoutScripts(t, chromium, url, "noscript > p.nojs")
	if !message || !strings.Contains(noJS, "This page draws the cluster with JavaScript, which is off") ||
		!strings.Contains(noJS, `<main id="app" hidden="">`) {
		t.Errorf("without JavaScript, no message (an element matching %q: %v):\n%s", "noscript > p.nojs", message, noJS)
	}
}

// findChromium returns Debian's chromium, skipping the test when it is
// missing, unless CI is set.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "headless Chromium is missing: apt-get install -y chromium"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// chromiumArgs are the flags every run of headless Chromium takes, with a
// profile in a temporary directory; env is its environment (HOME there
// too).
func chromiumArgs(t *testing.T) (args, env []string) {
	home := t.TempDir()
	args = []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
		"--disable-sync", "--mute-audio", "--user-data-dir=" + filepath.Join(home, "profile")}
	env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_CACHE_HOME="+filepath.Join(home, ".cache"))
	return args, env
}

// dumpDOM loads url in headless Chromium, lets budget of virtual time
// pass (timers run; time stands still while requests are under way), and
// returns the DOM then.
func dumpDOM(t *testing.T, chromium, url string, budget time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args, env := chromiumArgs(t)
	args = append(args, "--virtual-time-budget="+strconv.FormatInt(budget.Milliseconds(), 10), "--dump-dom", url)
	cmd := exec.CommandContext(ctx, chromium, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v after %s\n%s", chromium, err, time.Since(start).Round(time.Millisecond), stderr.String())
	}
	if !strings.Contains(stdout.String(), "</html>") {
		t.Fatalf("%s: no DOM\nstdout: %s\nstderr: %s", chromium, stdout.String(), stderr.String())
	}
	t.Logf("chromium, %s of virtual time: %s", budget, time.Since(start).Round(time.Millisecond))
	return stdout.String()
}

// loadWithoutScripts loads url in headless Chromium with scripts disabled
// and returns the document's HTML once loaded, and whether an element
// matches selector (the content of a noscript element is elements only
// when scripts are off; else it is text). It speaks the
// DevTools protocol over a pipe (--remote-debugging-pipe: Chromium reads
// NUL-terminated JSON messages on fd 3 and writes on fd 4).
func loadWithoutScripts(t *testing.T, chromium, url, selector string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	toChrome, ourEnd, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	theirEnd, fromChrome, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args, env := chromiumArgs(t)
	cmd := exec.CommandContext(ctx, chromium, append(args, "--remote-debugging-pipe", "about:blank")...)
	cmd.Env = env
	cmd.ExtraFiles = []*os.File{toChrome, fromChrome} // fds 3 and 4
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	toChrome.Close()
	fromChrome.Close()
	defer func() {
		// Browser.close, or the pipe closing, ends it; else kill it.
		ourEnd.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cancel()
			<-done
		}
	}()
	// The pipe closes when Chromium exits or ctx ends: reads then fail.
	go func() { <-ctx.Done(); theirEnd.Close() }()

	in := bufio.NewReader(theirEnd)
	nextID := 0
	// call sends a command (to the page's session when session is set)
	// and waits for its answer, passing the events before it to onEvent.
	call := func(session, method string, params any, onEvent func(method string, params json.RawMessage)) json.RawMessage {
		t.Helper()
		nextID++
		msg := map[string]any{"id": nextID, "method": method, "params": params}
		if session != "" {
			msg["sessionId"] = session
		}
		b, _ := json.Marshal(msg)
		if _, err := ourEnd.Write(append(b, 0)); err != nil {
			t.Fatalf("DevTools %s: %v\n%s", method, err, stderr.String())
		}
		for {
			raw, err := in.ReadBytes(0)
			if err != nil {
				t.Fatalf("DevTools %s: %v\n%s", method, err, stderr.String())
			}
			var m struct {
				ID     int             `json:"id"`
				Method string          `json:"method"`
				Params json.RawMessage `json:"params"`
				Result json.RawMessage `json:"result"`
				Error  *struct {
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(raw[:len(raw)-1], &m); err != nil {
				t.Fatalf("DevTools: %v in %s", err, raw)
			}
			switch {
			case m.ID == nextID && m.Error != nil:
				t.Fatalf("DevTools %s: %s", method, m.Error.Message)
			case m.ID == nextID:
				return m.Result
			case m.Method != "" && onEvent != nil:
				onEvent(m.Method, m.Params)
			}
		}
	}
	var target struct{ TargetID string }
	_ = json.Unmarshal(call("", "Target.createTarget", map[string]any{"url": "about:blank"}, nil), &target)
	var attached struct{ SessionID string }
	_ = json.Unmarshal(call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, nil), &attached)
	page := attached.SessionID
	call(page, "Emulation.setScriptExecutionDisabled", map[string]any{"value": true}, nil)
	call(page, "Page.enable", map[string]any{}, nil)
	loaded := false
	onLoad := func(method string, _ json.RawMessage) {
		if method == "Page.loadEventFired" {
			loaded = true
		}
	}
	call(page, "Page.navigate", map[string]any{"url": url}, onLoad)
	for !loaded {
		// Any cheap command lets the events before its answer arrive.
		call(page, "Runtime.getIsolateId", map[string]any{}, onLoad)
		time.Sleep(10 * time.Millisecond)
	}
	var doc struct{ Root struct{ NodeID int } }
	_ = json.Unmarshal(call(page, "DOM.getDocument", map[string]any{}, nil), &doc)
	var html struct{ OuterHTML string }
	_ = json.Unmarshal(call(page, "DOM.getOuterHTML", map[string]any{"nodeId": doc.Root.NodeID}, nil), &html)
	var found struct{ NodeID int }
	_ = json.Unmarshal(call(page, "DOM.querySelector", map[string]any{"nodeId": doc.Root.NodeID, "selector": selector}, nil), &found)
	call("", "Browser.close", map[string]any{}, nil)
	return html.OuterHTML, found.NodeID != 0
}

// TestRegionBudget: a region's stages are those of the member worst off
// (over its budget first, then the highest p99 for its budget), counts
// add up, one member over makes the region over, and a region whose
// members all failed to answer is unknown.
func TestRegionBudget(t *testing.T) {
	t.Parallel()
	report := func(node string, walSync, walBudget float64, within bool) *BudgetReport {
		return &BudgetReport{Region: "eu", Node: node, Within: within,
			Ack:     Verdict{P99Seconds: walSync, BudgetSeconds: 0.05, Within: true},
			Visible: VisibleVerdict{Verdict: Verdict{P99Seconds: 1, BudgetSeconds: 2, Within: within}},
			Stages: []StageReport{
				{Stage: "validation", P99Seconds: 0.001, BudgetSeconds: 0.01, Within: true, Count: 10},
				{Stage: "wal_sync", P99Seconds: walSync, BudgetSeconds: walBudget, Within: walSync <= walBudget, Count: 10},
			}}
	}
	budgets := []MemberBudget{
		{Member: "eu/a", Region: "eu", Report: report("a", 0.020, 0.030, true)},
		{Member: "eu/b", Region: "eu", Report: report("b", 0.025, 0.020, false)}, // over, though c's p99 is higher
		{Member: "eu/c", Region: "eu", Report: report("c", 0.029, 0.030, true)},
		{Member: "eu/d", Region: "eu", Error: "no answer within 2s"},
		{Member: "us/e", Region: "us", Error: "connection refused"},
	}
	eu := regionBudget("eu", budgets)
	if eu.Verdict != "over" || eu.Reporting != 3 || eu.Unreachable != 1 || len(eu.Stages) != 2 {
		t.Fatalf("eu: %+v", eu)
	}
	if ws := eu.Stages[1]; ws.Stage != "wal_sync" || ws.Member != "eu/b" || ws.Within || ws.P99Seconds != 0.025 || ws.Count != 30 {
		t.Errorf("eu's wal_sync: %+v, want eu/b's, counts added", ws)
	}
	if v := eu.Stages[0]; v.Member != "eu/a" || v.Count != 30 {
		t.Errorf("eu's validation: %+v, want the first of equals, counts added", v)
	}
	if eu.Ack.Member != "eu/c" || eu.Visible.Member != "eu/b" || eu.Visible.Within {
		t.Errorf("eu's ack from %s, visible from %s (within %v): want eu/c and eu/b", eu.Ack.Member, eu.Visible.Member, eu.Visible.Within)
	}
	if us := regionBudget("us", budgets); us.Verdict != "unknown" || us.Reporting != 0 || us.Unreachable != 1 || us.Stages != nil {
		t.Errorf("us: %+v", us)
	}
}
