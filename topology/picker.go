package topology

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/cooldown"
)

// Defaults of PickerConfig.
const (
	DefaultRefreshInterval = 2 * time.Second
	DefaultRTTInterval     = 10 * time.Second
	DefaultPickerTimeout   = 3 * time.Second
	DefaultCooldown        = 10 * time.Second
)

// PickerConfig configures a Picker.
type PickerConfig struct {
	// Region is the client's region: its edges come first. Required.
	Region string
	// Seeds are gRPC addresses of edges: asked for the members until one
	// answers, and again whenever no known member answers; picked, in
	// order, while no member is known. Required.
	Seeds []string
	// RefreshInterval is how often the members are fetched (ListMembers on
	// an edge that answers). Default 2s.
	RefreshInterval time.Duration
	// RTTInterval is how often the round trip to each member is measured
	// (a gRPC health check; smoothed). Default 10s.
	RTTInterval time.Duration
	// Timeout bounds each ListMembers and each health check. Default 3s.
	Timeout time.Duration
	// Cooldown is how long an edge is avoided after a failed attempt or a
	// failed health check. Default 10s.
	Cooldown time.Duration
	// DialOptions come after the Picker's own (insecure transport
	// credentials) and so override them.
	DialOptions []grpc.DialOption
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

func (c *PickerConfig) setDefaults() {
	if c.RefreshInterval == 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	if c.RTTInterval == 0 {
		c.RTTInterval = DefaultRTTInterval
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultPickerTimeout
	}
	if c.Cooldown == 0 {
		c.Cooldown = DefaultCooldown
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *PickerConfig) validate() error {
	var errs []error
	if c.Region == "" {
		errs = append(errs, errors.New("topology: picker: Region is required"))
	}
	if len(c.Seeds) == 0 {
		errs = append(errs, errors.New("topology: picker: Seeds is required"))
	}
	for i, s := range c.Seeds {
		if s == "" {
			errs = append(errs, fmt.Errorf("topology: picker: Seeds[%d] is empty", i))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"RefreshInterval", c.RefreshInterval}, {"RTTInterval", c.RTTInterval}, {"Timeout", c.Timeout}, {"Cooldown", c.Cooldown}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("topology: picker: %s must be positive, got %s", d.name, d.v))
		}
	}
	return errors.Join(errs...)
}

// Picker chooses the edge of each push from the live membership of the
// cluster: it implements pushclient.Picker. It fetches the members every
// RefreshInterval from an edge that answers, and measures the round trip
// to each every RTTInterval. Edges are preferred in this order:
//
//  1. healthy edges — alive, not full, not draining, within budget — of
//     the client's region, then of the other regions, nearest (by smoothed
//     round trip) first;
//  2. edges that are only over budget or suspect, in the same order;
//  3. full or draining edges (they may have room again by the time the
//     push arrives; the edge's retry hint keeps the client away if not);
//  4. seeds that are not members (an address behind a load balancer).
//
// Dead and departed edges are never picked. Within a region each client
// orders the edges by a hash of its own (rendezvous hashing), so the
// clients of a region spread over its edges and each keeps to one. An
// edge whose attempt failed is avoided for Cooldown, then preferred again
// as its rank says; when every edge not excluded cools down, the one whose
// cooldown ends first is offered.
//
// Pick, Failed and Succeeded do no I/O. Close stops the background work.
type Picker struct {
	cfg  PickerConfig
	log  *slog.Logger
	dial []grpc.DialOption
	seed uint64
	now  func() time.Time // the clock of cooldowns; tests replace it

	refreshNow chan struct{}
	ctx        context.Context // of the background work, cancelled by Close
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	mu      sync.Mutex
	members []Member                    // as last fetched
	source  string                      // the edge that answered last
	rtt     map[string]time.Duration    // smoothed, by gRPC address
	until   map[string]time.Time        // ends of cooldowns, by gRPC address
	ranked  []string                    // gRPC addresses, most preferred first
	conns   map[string]*grpc.ClientConn // by gRPC address
	closed  bool
}

// NewPicker returns a Picker and starts its background refresh (the first
// right away: until it answers, the Picker offers the seeds in order).
func NewPicker(cfg PickerConfig) (*Picker, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := newPicker(cfg)
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.refreshLoop() }()
	go func() { defer p.wg.Done(); p.rttLoop() }()
	return p, nil
}

func newPicker(cfg PickerConfig) *Picker {
	p := &Picker{
		cfg: cfg, log: cfg.Logger, seed: rand.Uint64(), now: time.Now,
		dial:       append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, cfg.DialOptions...),
		refreshNow: make(chan struct{}, 1),
		rtt:        map[string]time.Duration{}, until: map[string]time.Time{}, conns: map[string]*grpc.ClientConn{},
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.ranked = slices.Clone(cfg.Seeds)
	return p
}

// Close stops the refreshes and closes the Picker's connections. Safe to
// call twice.
func (p *Picker) Close() error {
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	conns := p.conns
	p.conns, p.closed = nil, true
	p.mu.Unlock()
	var errs []error
	for _, cc := range conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

// Pick implements pushclient.Picker.
func (p *Picker) Pick(exclude map[string]bool) (string, bool) {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	return cooldown.Pick(p.ranked, exclude, p.until, now)
}

// Failed implements pushclient.Picker: addr is avoided for Cooldown, and
// the members are fetched again soon (the edge may be gone).
func (p *Picker) Failed(addr string, _ error) {
	p.cool(addr)
	select {
	case p.refreshNow <- struct{}{}:
	default:
	}
}

// Succeeded implements pushclient.Picker.
func (p *Picker) Succeeded(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.until, addr)
}

func (p *Picker) cool(addr string) {
	end := p.now().Add(p.cfg.Cooldown)
	p.mu.Lock()
	defer p.mu.Unlock()
	if end.After(p.until[addr]) {
		p.until[addr] = end
	}
}

// Members returns the members as last fetched, and the round trip measured
// to each (by gRPC address; absent when not measured yet).
func (p *Picker) Members() ([]Member, map[string]time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rtt := make(map[string]time.Duration, len(p.rtt))
	for a, d := range p.rtt {
		rtt[a] = d
	}
	return slices.Clone(p.members), rtt
}

// Ranked returns the edges in the order Pick prefers them, cooldowns
// aside.
func (p *Picker) Ranked() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ranked)
}

func (p *Picker) refreshLoop() {
	t := time.NewTicker(p.cfg.RefreshInterval)
	defer t.Stop()
	for {
		if err := p.Refresh(p.ctx); err != nil && p.ctx.Err() == nil {
			p.log.Warn("topology: picker: no edge answered with the members; keeping the last known", "err", err)
		}
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		case <-p.refreshNow:
		}
	}
}

func (p *Picker) rttLoop() {
	// The first measurements wait for the first members.
	t := time.NewTimer(min(p.cfg.RefreshInterval, p.cfg.RTTInterval) / 2)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.MeasureRTT(p.ctx)
		t.Reset(p.cfg.RTTInterval)
	}
}

// Refresh fetches the members now: from the edge that answered last, else
// the others known (the client's region first), else the seeds.
func (p *Picker) Refresh(ctx context.Context) error {
	p.mu.Lock()
	sources := []string{p.source}
	sources = append(sources, p.ranked...)
	p.mu.Unlock()
	sources = append(sources, p.cfg.Seeds...)
	seen := map[string]bool{"": true}
	var errs []error
	tried := 0
	for _, addr := range sources {
		if seen[addr] {
			continue
		}
		seen[addr] = true
		if tried++; tried > 4+len(p.cfg.Seeds) { // a few members, then every seed
			break
		}
		resp, err := p.listMembers(ctx, addr)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		members := make([]Member, 0, len(resp.GetMembers()))
		for _, m := range resp.GetMembers() {
			members = append(members, MemberFromProto(m))
		}
		p.mu.Lock()
		p.members, p.source = members, addr
		p.rank()
		p.mu.Unlock()
		return nil
	}
	return errors.Join(errs...)
}

func (p *Picker) listMembers(ctx context.Context, addr string) (*longhaulv1.ListMembersResponse, error) {
	cc, _, err := p.conn(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	return longhaulv1.NewTopologyClient(cc).ListMembers(ctx, &longhaulv1.ListMembersRequest{})
}

// conn returns the connection to addr, made on first use (fresh is true
// then).
func (p *Picker) conn(addr string) (cc *grpc.ClientConn, fresh bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, false, errors.New("topology: picker closed")
	}
	if cc := p.conns[addr]; cc != nil {
		return cc, false, nil
	}
	if cc, err = grpc.NewClient(addr, p.dial...); err != nil {
		return nil, false, err
	}
	p.conns[addr] = cc
	return cc, true, nil
}

// MeasureRTT measures the round trip to every member alive or suspect now
// (a gRPC health check of longhaul.v1.Ingest), and smooths it into what it
// knew. A member that does not answer, or answers it is not serving, is
// avoided for Cooldown.
func (p *Picker) MeasureRTT(ctx context.Context) {
	p.mu.Lock()
	var addrs []string
	for _, m := range p.members {
		if !m.State.Gone() && m.GRPCAddr != "" {
			addrs = append(addrs, m.GRPCAddr)
		}
	}
	p.mu.Unlock()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, addr := range addrs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			d, err := p.check(ctx, addr)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				p.log.Debug("topology: picker: edge does not answer its health check", "edge", addr, "err", err)
				p.cool(addr)
				return
			}
			p.mu.Lock()
			if old, ok := p.rtt[addr]; ok {
				d = old + (d-old)/4 // an exponential moving average
			}
			p.rtt[addr] = d
			p.mu.Unlock()
		}()
	}
	wg.Wait()
	p.mu.Lock()
	p.rank()
	p.mu.Unlock()
}

// check measures one round trip to addr. On a new connection the first
// check also sets the connection up, so a second one is measured.
func (p *Picker) check(ctx context.Context, addr string) (time.Duration, error) {
	cc, fresh, err := p.conn(addr)
	if err != nil {
		return 0, err
	}
	h := healthpb.NewHealthClient(cc)
	checks := 1
	if fresh {
		checks = 2
	}
	var d time.Duration
	for range checks {
		cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
		start := time.Now()
		resp, err := h.Check(cctx, &healthpb.HealthCheckRequest{Service: longhaulv1.Ingest_ServiceDesc.ServiceName})
		d = time.Since(start)
		cancel()
		if err != nil {
			return 0, err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return 0, fmt.Errorf("health: %s", resp.GetStatus())
		}
	}
	return d, nil
}

// rank orders the members as Pick prefers them (see Picker), and closes
// the connections to edges no longer listed. p.mu is held.
func (p *Picker) rank() {
	regionRTT := map[string]time.Duration{}
	for _, m := range p.members {
		if d, ok := p.rtt[m.GRPCAddr]; ok && !m.State.Gone() {
			if old, seen := regionRTT[m.Region]; !seen || d < old {
				regionRTT[m.Region] = d
			}
		}
	}
	type cand struct {
		addr       string
		tier, near int
		region     string
		rtt        time.Duration
		hash       uint64
	}
	var cands []cand
	listed := map[string]bool{}
	for _, m := range p.members {
		if m.State.Gone() || m.GRPCAddr == "" || listed[m.GRPCAddr] {
			continue
		}
		listed[m.GRPCAddr] = true
		c := cand{addr: m.GRPCAddr, region: m.Region, hash: p.hash(m.Name)}
		switch {
		case m.Status.Full || m.Status.Draining:
			c.tier = 2
		case m.State != StateAlive || !m.Status.WithinBudget:
			c.tier = 1
		}
		if m.Region != p.cfg.Region {
			c.near = 1
			var ok bool
			if c.rtt, ok = regionRTT[m.Region]; !ok {
				c.rtt = time.Duration(1<<63 - 1) // not measured yet: after those that were
			}
		}
		cands = append(cands, c)
	}
	slices.SortFunc(cands, func(a, b cand) int {
		return cmp.Or(cmp.Compare(a.tier, b.tier), cmp.Compare(a.near, b.near), cmp.Compare(a.rtt, b.rtt),
			cmp.Compare(a.region, b.region), cmp.Compare(a.hash, b.hash), cmp.Compare(a.addr, b.addr))
	})
	ranked := make([]string, 0, len(cands)+len(p.cfg.Seeds))
	for _, c := range cands {
		ranked = append(ranked, c.addr)
	}
	for _, s := range p.cfg.Seeds {
		if !listed[s] {
			ranked = append(ranked, s)
		}
	}
	p.ranked = ranked

	known := map[string]bool{}
	for _, m := range p.members {
		known[m.GRPCAddr] = true
	}
	for _, s := range p.cfg.Seeds {
		known[s] = true
	}
	for addr, cc := range p.conns {
		if !known[addr] {
			_ = cc.Close()
			delete(p.conns, addr)
			delete(p.rtt, addr)
		}
	}
}

// hash is the client's own order of the edges within a region.
func (p *Picker) hash(name string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for i := range b {
		b[i] = byte(p.seed >> (8 * i))
	}
	h.Write(b[:])
	h.Write([]byte(name))
	return h.Sum64()
}
