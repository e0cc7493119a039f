package topology

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/serve"
)

// fakeEdge is a member with the gRPC services the Picker talks to
// (Topology, and health with longhaul.v1.Ingest SERVING): an edge without
// its WAL.
type fakeEdge struct {
	node   *Node
	grpc   *serve.GRPC
	addr   string
	status *testStatus
}

// startFakeEdge starts a member of region and its gRPC server, whose health
// checks take rtt more; stopped when t ends.
func startFakeEdge(t *testing.T, region, id string, join []string, rtt time.Duration) *fakeEdge {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &fakeEdge{addr: ln.Addr().String(), status: newTestStatus(Status{WithinBudget: true})}
	e.node = startNode(t, region, id, join, func(c *Config) {
		c.GRPCAddr, c.Meta = e.addr, e.status.get
	})
	e.grpc = serve.NewGRPC(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == "/grpc.health.v1.Health/Check" {
			time.Sleep(rtt)
		}
		return h(ctx, req)
	}))
	longhaulv1.RegisterTopologyServer(e.grpc.Server, NewServer(e.node))
	e.grpc.Serve(ln, longhaulv1.Ingest_ServiceDesc.ServiceName)
	t.Cleanup(e.kill)
	return e
}

// kill stops the member without leaving, and its server.
func (e *fakeEdge) kill() {
	_ = e.node.Shutdown()
	e.grpc.Server.Stop()
}

func newTestPicker(t *testing.T, region string, seeds ...string) *Picker {
	t.Helper()
	p, err := NewPicker(PickerConfig{Region: region, Seeds: seeds, RefreshInterval: 100 * time.Millisecond,
		RTTInterval: 100 * time.Millisecond, Timeout: time.Second, Cooldown: 300 * time.Millisecond, Logger: testLogger(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// picks waits until Pick offers an edge that want accepts.
func picks(t *testing.T, p *Picker, what string, want func(addr string) bool) string {
	t.Helper()
	var got string
	waitFor(t, 15*time.Second, "the picker offers "+what, func() (bool, string) {
		var ok bool
		got, ok = p.Pick(nil)
		return ok && want(got), fmt.Sprintf("%q (ranked %v)", got, p.Ranked())
	})
	return got
}

// TestPicker: the picker learns the edges from a seed in another region,
// prefers its own region's healthy edges (each client keeping to one),
// then the nearest other region's; it moves off an edge that failed (for
// the cooldown), is over budget, full or gone, and comes back when it
// recovers.
func TestPicker(t *testing.T) {
	t.Parallel()
	euA := startFakeEdge(t, "eu", "a", nil, 0)
	join := []string{euA.node.Addr()}
	euB := startFakeEdge(t, "eu", "b", join, 0)
	// The near region sorts after the far one by name: only the measured
	// round trips put it first.
	ap := startFakeEdge(t, "ap", "a", join, 100*time.Millisecond) // far
	us := startFakeEdge(t, "us", "a", join, 0)                    // near
	allSee(t, 20*time.Second, []*Node{euA.node, euB.node, us.node, ap.node}, StateAlive, "eu/a", "eu/b", "us/a", "ap/a")
	region := map[string]string{euA.addr: "eu", euB.addr: "eu", us.addr: "us", ap.addr: "ap"}
	in := func(r string) func(string) bool { return func(a string) bool { return region[a] == r } }

	p := newTestPicker(t, "eu", ap.addr)
	waitFor(t, 15*time.Second, "the edges ranked own region, nearest region, farthest", func() (bool, string) {
		r := p.Ranked()
		var regions []string
		for _, a := range r {
			regions = append(regions, region[a])
		}
		_, rtt := p.Members()
		return len(rtt) == 4 && slices.Equal(regions, []string{"eu", "eu", "us", "ap"}), fmt.Sprintf("%v, round trips %v", regions, rtt)
	})
	_, rtt := p.Members()
	t.Logf("round trips: eu/a %s, eu/b %s, us %s, ap %s", rtt[euA.addr], rtt[euB.addr], rtt[us.addr], rtt[ap.addr])
	first := p.Ranked()[0]
	other := map[string]string{euA.addr: euB.addr, euB.addr: euA.addr}[first]
	for range 10 {
		if got, _ := p.Pick(nil); got != first {
			t.Fatalf("Pick = %s, then %s: not keeping to one edge", first, got)
		}
	}
	if got, _ := p.Pick(map[string]bool{euA.addr: true, euB.addr: true}); got != us.addr {
		t.Errorf("Pick excluding the region's edges = %s, want the nearest other region's %s", got, us.addr)
	}

	// A failed attempt: the other edge of the region, until the cooldown
	// ends.
	p.Failed(first, status.Error(codes.Unavailable, "down"))
	if got, _ := p.Pick(nil); got != other {
		t.Errorf("after a failure on %s, Pick = %s, want %s", first, got, other)
	}
	picks(t, p, "the first edge again after its cooldown", func(a string) bool { return a == first })

	byAddr := map[string]*fakeEdge{euA.addr: euA, euB.addr: euB}
	// Over budget: the region's edge within budget.
	byAddr[first].status.set(Status{WithinBudget: false, Over: "visible 3s/1s"})
	picks(t, p, "the region's edge within budget", func(a string) bool { return a == other })
	// Both full (one also over budget): the nearest other region.
	byAddr[first].status.set(Status{Full: true})
	byAddr[other].status.set(Status{Full: true, WithinBudget: true})
	picks(t, p, "the nearest other region's edge (own region full)", in("us"))
	// Room again: back home.
	byAddr[first].status.set(Status{WithinBudget: true})
	byAddr[other].status.set(Status{WithinBudget: true})
	picks(t, p, "its own region's edge again", func(a string) bool { return a == first })

	// The region's edges die: the nearest other region; they never come
	// back as members, so the picker drops them once the cluster declares
	// them dead.
	euA.kill()
	euB.kill()
	picks(t, p, "the nearest other region's edge (own region gone)", in("us"))
	waitFor(t, 15*time.Second, "the dead edges out of the ranking", func() (bool, string) {
		r := p.Ranked()
		return !slices.Contains(r, euA.addr) && !slices.Contains(r, euB.addr), fmt.Sprint(r)
	})

	// A new edge in the region: back home.
	euC := startFakeEdge(t, "eu", "c", []string{us.node.Addr()}, 0)
	region[euC.addr] = "eu"
	picks(t, p, "the region's new edge", func(a string) bool { return a == euC.addr })
	members, _ := p.Members()
	states := map[string]State{}
	for _, m := range members {
		states[m.Name] = m.State
	}
	t.Logf("members as the picker last heard: %v", states)
}

// TestPickerSeedsFirst: until an edge answers with the members, the picker
// offers the seeds in order, with cooldowns.
func TestPickerSeedsFirst(t *testing.T) {
	t.Parallel()
	a, b := closedAddr(t), closedAddr(t)
	p := newTestPicker(t, "eu", a, b)
	if got, _ := p.Pick(nil); got != a {
		t.Errorf("Pick = %s, want the first seed %s", got, a)
	}
	p.Failed(a, status.Error(codes.Unavailable, "down"))
	if got, _ := p.Pick(nil); got != b {
		t.Errorf("after a failure, Pick = %s, want the second seed %s", got, b)
	}
	p.Failed(b, status.Error(codes.Unavailable, "down"))
	if got, ok := p.Pick(map[string]bool{b: true}); got != a || !ok {
		t.Errorf("all cooling: Pick = %s, %v; want the one whose cooldown ends first, %s", got, ok, a)
	}
	if got, ok := p.Pick(map[string]bool{a: true, b: true}); ok {
		t.Errorf("all excluded: Pick = %s, want none", got)
	}
	if _, err := NewPicker(PickerConfig{Seeds: []string{a}}); err == nil {
		t.Error("NewPicker without a region: no error")
	}
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
