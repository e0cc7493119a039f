package topology

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
)

// TestMetaSize: the gossip metadata never exceeds memberlist's 512 bytes
// (memberlist panics beyond it): names too long are refused by Start (a
// standalone member sends none, and takes them), and the budget reason is
// cut, on a rune boundary, to fit.
func TestMetaSize(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("x", n) }
	for _, tc := range []struct {
		name         string
		region, node string
		grpc, http   string
		wantErr      bool
	}{
		{name: "short", region: "eu", node: "n1", grpc: "10.0.0.1:7300", http: "10.0.0.1:7301"},
		{name: "long names fit", region: long(120), node: long(120), grpc: "[2001:db8::1234:5678:9abc:def0]:7300", http: "[2001:db8::1234:5678:9abc:def0]:7301"},
		{name: "names too long", region: long(300), node: long(200), grpc: "10.0.0.1:7300", http: "10.0.0.1:7301", wantErr: true},
		{name: "addresses too long", region: "eu", node: "n1", grpc: long(250) + ":7300", http: long(250) + ":7301", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Region: tc.region, NodeID: tc.node, GRPCAddr: tc.grpc, HTTPAddr: tc.http, BindAddr: "127.0.0.1:0"}
			cfg.setDefaults()
			err := cfg.validate(true)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "shorten them") {
					t.Fatalf("validate: %v; want the metadata refused as too long", err)
				}
				if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "shorten them") {
					t.Fatalf("Start: %v; want the metadata refused as too long", err)
				}
				if _, err := Standalone(cfg); err != nil {
					t.Fatalf("Standalone (no metadata sent): %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			worst := Status{BacklogRecords: 1 << 62, BacklogBytes: 1 << 62, OldestUnshipped: 1 << 62, Full: true, Draining: true}
			for _, over := range []string{"", "over: visible 1.31s/1s", long(119) + "é", strings.Repeat("é", 400)} {
				worst.Over = over
				b := encodeMeta(&cfg, tc.grpc, tc.http, worst, true, time.Now())
				if len(b) > memberlist.MetaMaxSize {
					t.Fatalf("Over of %d bytes: metadata of %d bytes", len(over), len(b))
				}
				m, ok := decodeMeta(b)
				if !ok {
					t.Fatal("metadata does not decode")
				}
				got := statusOf(m)
				if !strings.HasPrefix(over, got.Over) || !utf8.ValidString(got.Over) || len(got.Over) > maxOver {
					t.Fatalf("Over %q became %q", over, got.Over)
				}
				if len(over) <= maxOver && len(b)+(len(over)-len(got.Over)) <= memberlist.MetaMaxSize && got.Over != over {
					t.Errorf("Over %q cut to %q though it fits", over, got.Over)
				}
				if m.GetRegion() != tc.region || m.GetNodeId() != tc.node || m.GetGrpc() != tc.grpc || got.BacklogBytes != worst.BacklogBytes || !got.Full || got.WithinBudget {
					t.Fatalf("round trip: %v", m)
				}
				t.Logf("Over %4d bytes -> %3d; metadata %d bytes", len(over), len(got.Over), len(b))
			}
		})
	}
}

// TestClusterTwoRegions: five members in two regions, each joining through
// the first, form one cluster; each lists all five, alive, with their
// regions, addresses and statuses, and the summary per region adds up. A
// member that leaves is listed as left, not dead, by the others.
func TestClusterTwoRegions(t *testing.T) {
	t.Parallel()
	names := []struct{ region, id string }{{"eu", "n1"}, {"eu", "n2"}, {"eu", "n3"}, {"us", "n1"}, {"us", "n2"}}
	var nodes []*Node
	statuses := map[string]*testStatus{}
	for i, nm := range names {
		st := newTestStatus(Status{BacklogRecords: int64(10 * (i + 1)), BacklogBytes: int64(1000 * (i + 1)), WithinBudget: true})
		statuses[nm.region+"/"+nm.id] = st
		var join []string
		if i > 0 {
			join = []string{nodes[0].Addr(), "127.0.0.1:1"} // one seed answers, one does not
		}
		nodes = append(nodes, startNode(t, nm.region, nm.id, join, func(c *Config) {
			c.GRPCAddr, c.HTTPAddr = fmt.Sprintf(":%d", 7300+i), fmt.Sprintf("127.0.0.1:%d", 8300+i)
			c.Meta = st.get
		}))
	}
	all := []string{"eu/n1", "eu/n2", "eu/n3", "us/n1", "us/n2"}
	allSee(t, 20*time.Second, nodes, StateAlive, all...)

	// A status change reaches everyone within a few heartbeats.
	statuses["eu/n2"].set(Status{BacklogRecords: 7, Full: true, Over: "visible 2s/1s"})
	waitFor(t, 10*time.Second, "eu/n2's new status everywhere", func() (bool, string) {
		for _, o := range nodes {
			for _, m := range o.Members() {
				if m.Name == "eu/n2" && (!m.Status.Full || m.Status.WithinBudget || m.Status.Over != "visible 2s/1s" || m.Status.BacklogRecords != 7) {
					return false, fmt.Sprintf("%s sees %+v", o.Name(), m.Status)
				}
			}
		}
		return true, ""
	})

	for _, o := range nodes {
		ms := o.Members()
		if !slices.IsSortedFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) }) || len(ms) != 5 {
			t.Fatalf("%s lists %v", o.Name(), ms)
		}
		for i, m := range ms {
			if m.Region != names[i].region || m.NodeID != names[i].id {
				t.Errorf("%s lists %s in region %q as node %q", o.Name(), m.Name, m.Region, m.NodeID)
			}
			// ":7300+i" advertised with the gossip host filled in.
			if m.GRPCAddr != fmt.Sprintf("127.0.0.1:%d", 7300+i) || m.HTTPAddr != fmt.Sprintf("127.0.0.1:%d", 8300+i) {
				t.Errorf("%s lists %s at %s and %s", o.Name(), m.Name, m.GRPCAddr, m.HTTPAddr)
			}
			if m.GossipAddr != nodes[i].Addr() {
				t.Errorf("%s lists %s's gossip at %s, want %s", o.Name(), m.Name, m.GossipAddr, nodes[i].Addr())
			}
			if want := statuses[m.Name].get(); m.Status.BacklogRecords != want.BacklogRecords || m.Status.BacklogBytes != want.BacklogBytes {
				t.Errorf("%s lists %s's backlog as %d/%d, want %d/%d", o.Name(), m.Name, m.Status.BacklogRecords, m.Status.BacklogBytes, want.BacklogRecords, want.BacklogBytes)
			}
		}
	}
	resp := Response(nodes[3].Name(), nodes[3].Members())
	want := []*longhaulv1.RegionSummary{
		{Region: "eu", Alive: 3, BacklogRecords: 10 + 7 + 30, BacklogBytes: 1000 + 3000, OverBudget: 1, Full: 1},
		{Region: "us", Alive: 2, BacklogRecords: 40 + 50, BacklogBytes: 4000 + 5000},
	}
	if resp.GetSelf() != "us/n1" || len(resp.GetRegions()) != 2 || len(resp.GetMembers()) != 5 {
		t.Fatalf("response %v", resp)
	}
	for i, w := range want {
		g := resp.GetRegions()[i]
		if g.GetRegion() != w.GetRegion() || g.GetAlive() != w.GetAlive() || g.GetBacklogRecords() != w.GetBacklogRecords() ||
			g.GetBacklogBytes() != w.GetBacklogBytes() || g.GetOverBudget() != w.GetOverBudget() || g.GetFull() != w.GetFull() {
			t.Errorf("region summary %v, want %v", g, w)
		}
	}

	// us/n2 leaves: listed as left, by the others and by itself.
	if err := nodes[4].Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := nodes[4].Local().State; got != StateLeft {
		t.Errorf("after Leave, the member's own state is %s", got)
	}
	allSee(t, 10*time.Second, nodes[:4], StateLeft, "us/n2")
	if err := nodes[4].Shutdown(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // left stays left after the shutdown
	allSee(t, time.Second, nodes[:4], StateLeft, "us/n2")
}

// stableCluster starts n members (the first in region eu, the others
// alternating), records their events in log, and waits until every member
// sees every other alive and memberlist counts each healthy (Lifeguard
// awareness 0: the detection bound assumes healthy observers).
func stableCluster(t *testing.T, n int, log *eventLog, configure func(i int, c *Config)) []*Node {
	t.Helper()
	var nodes []*Node
	var names []string
	for i := range n {
		region := []string{"eu", "us"}[i%2]
		var join []string
		if i > 0 {
			join = []string{nodes[0].Addr()}
		}
		nodes = append(nodes, startNode(t, region, fmt.Sprintf("n%d", i), join, func(c *Config) {
			c.OnChange = log.hook(c.Name())
			if configure != nil {
				configure(i, c)
			}
		}))
		names = append(names, nodes[i].Name())
	}
	allSee(t, 20*time.Second, nodes, StateAlive, names...)
	waitFor(t, 20*time.Second, "every member healthy", func() (bool, string) {
		for _, nd := range nodes {
			if s := nd.HealthScore(); s != 0 {
				return false, fmt.Sprintf("%s at health score %d", nd.Name(), s)
			}
		}
		return true, ""
	})
	return nodes
}

// TestKilledMemberDeclaredDead: a member that stops without leaving (the
// in-process stand-in for SIGKILL: its sockets close, it answers nothing)
// is declared dead by every other member within the configuration's
// detection bound.
func TestKilledMemberDeclaredDead(t *testing.T) {
	const n = 5
	log := &eventLog{}
	nodes := stableCluster(t, n, log, nil)
	victim := nodes[2]
	bound := victim.Config().DetectionBound(n)
	const slack = time.Second // scheduling under -race, and the 10ms polling of nothing here
	t.Logf("timings %+v; detection bound for %d members: %s", victim.Config().Timings(), n, bound)

	killed := time.Now()
	if err := victim.Shutdown(); err != nil {
		t.Fatal(err)
	}
	others := slices.Delete(slices.Clone(nodes), 2, 3)
	allSee(t, bound+slack, others, StateDead, victim.Name())
	// The change event is delivered just after the member list changes.
	var dead map[string]observed
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		dead = log.find(victim.Name(), StateDead)
		if len(dead) >= len(others) || time.Now().After(deadline) {
			break
		}
	}
	suspect := log.find(victim.Name(), StateSuspect)
	for _, o := range others {
		ev, ok := dead[o.Name()]
		if !ok {
			t.Fatalf("%s saw %s dead without an event", o.Name(), victim.Name())
		}
		took := ev.at.Sub(killed)
		s := "not suspect first"
		if sp, ok := suspect[o.Name()]; ok {
			s = fmt.Sprintf("suspect after %s", sp.at.Sub(killed).Round(time.Millisecond))
		}
		t.Logf("%s: %s dead after %s (%s; bound %s)", o.Name(), victim.Name(), took.Round(time.Millisecond), s, bound)
		if took > bound+slack {
			t.Errorf("%s saw %s dead after %s, beyond the bound %s (+%s)", o.Name(), victim.Name(), took, bound, slack)
		}
	}
}

// TestDelayedMemberNotDeclaredDead: a member whose every packet and stream
// write is late by more than a probe interval — its acks miss the probes'
// deadlines, so the others suspect it again and again — but by less than
// the suspicion timeout is never declared dead: its heartbeats (each a
// memberlist alive message of a higher incarnation, late too) overrule
// each suspicion before it times out. Once its link is fast again everyone
// lists it alive.
func TestDelayedMemberNotDeclaredDead(t *testing.T) {
	const n = 5
	log := &eventLog{}
	rec := &recorder{}
	var slow *delayTransport
	nodes := stableCluster(t, n, log, func(i int, c *Config) {
		c.Logger = testLogger(rec)
		if i == 2 {
			c.wrapTransport = func(tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
				slow = newDelayTransport(tr)
				return slow
			}
		}
	})
	victim := nodes[2]
	tm := victim.Config().Timings()
	// Late beyond the probe deadline (an interval), well within the
	// shortest suspicion timeout (SuspicionMult intervals, n < 10).
	delay := tm.ProbeInterval + tm.ProbeInterval/4
	minSuspicion := time.Duration(tm.SuspicionMult) * tm.ProbeInterval
	t.Logf("delay %s; probe interval %s, timeout %s; suspicion timeout at least %s; heartbeat every %s",
		delay, tm.ProbeInterval, tm.ProbeTimeout, minSuspicion, tm.MetaInterval)
	if delay+tm.MetaInterval+3*tm.GossipInterval >= minSuspicion {
		t.Fatalf("the delay %s leaves no room for a heartbeat within %s", delay, minSuspicion)
	}

	suspectLine := "Suspect " + victim.Name() + " has failed"
	before := rec.count(suspectLine)
	slow.SetDelay(delay)
	time.Sleep(5 * time.Second)
	slow.SetDelay(0)
	suspected := rec.count(suspectLine) - before
	t.Logf("%s suspected %d times while slow", victim.Name(), suspected)
	if suspected == 0 {
		t.Errorf("%s was never suspected: the delay did not make its probes fail", victim.Name())
	}
	if dead := log.find(victim.Name(), StateDead); len(dead) > 0 {
		for o, ev := range dead {
			t.Errorf("%s declared the slow %s dead at %s", o, victim.Name(), ev.at.Format(time.StampMilli))
		}
	}
	allSee(t, 10*time.Second, nodes, StateAlive, victim.Name())
	if dead := log.find(victim.Name(), StateDead); len(dead) > 0 {
		t.Errorf("the slow member was declared dead after its link healed: %v", dead)
	}
}

// TestPartitionedMemberHealsAndRejoins: a member cut off from the others
// (nothing it sends arrives, no stream in or out) for longer than the
// detection bound is declared dead by every other member; once the cut
// heals it is alive again for all of them, and sees them all alive, without
// a restart.
func TestPartitionedMemberHealsAndRejoins(t *testing.T) {
	const n = 4
	log := &eventLog{}
	var cut *delayTransport
	nodes := stableCluster(t, n, log, func(i int, c *Config) {
		if i == 1 {
			c.wrapTransport = func(tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
				cut = newDelayTransport(tr)
				return cut
			}
		}
	})
	victim := nodes[1]
	others := slices.Delete(slices.Clone(nodes), 1, 2)
	bound := victim.Config().DetectionBound(n)
	cut.SetCut(true)
	partitioned := time.Now()
	allSee(t, bound+time.Second, others, StateDead, victim.Name())
	t.Logf("partitioned: %s declared dead by all %d others after %s (bound %s)", victim.Name(), len(others), time.Since(partitioned).Round(time.Millisecond), bound)
	cut.SetCut(false)
	healed := time.Now()
	allSee(t, 30*time.Second, others, StateAlive, victim.Name())
	for _, o := range others {
		allSee(t, 30*time.Second, []*Node{victim}, StateAlive, o.Name())
	}
	t.Logf("healed: %s alive again for all, and they for it, after %s", victim.Name(), time.Since(healed).Round(time.Millisecond))
}

// TestDetectionBound pins the bound's arithmetic on the profiles.
func TestDetectionBound(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		profile Profile
		n       int
		want    time.Duration
	}{
		// local: probe 200ms, suspicion 4 × 200ms, max ×3 with ≥ 2 confirmers.
		{ProfileLocal, 3, 4*200*time.Millisecond + 800*time.Millisecond},
		{ProfileLocal, 5, 8*200*time.Millisecond + 3*800*time.Millisecond},
		// wan: probe 5s, suspicion 6 × 5s, max ×6 with ≥ 4 confirmers.
		{ProfileWAN, 5, 8*5*time.Second + 30*time.Second},
		{ProfileWAN, 10, 18*5*time.Second + 6*30*time.Second},
		// lan: probe 1s, suspicion 4 × 1s × log10(100) = 8s, max ×6.
		{ProfileLAN, 100, 198*time.Second + 6*8*time.Second},
	} {
		if got := (Config{Profile: tc.profile}).DetectionBound(tc.n); got != tc.want {
			t.Errorf("%s, %d members: bound %s, want %s", tc.profile, tc.n, got, tc.want)
		}
	}
}
