package topology

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Event is a change of a member's state, as this member saw it.
type Event struct {
	// Member is the member in its new state (Member.StateSince is when the
	// change was seen).
	Member Member
	// Previous is the state before; a member never seen before was
	// StateDead.
	Previous State
}

// Node is this edge's membership of the cluster: it advertises the edge
// and keeps the list of the others. Its methods are safe for concurrent
// use.
type Node struct {
	cfg   Config
	log   *slog.Logger
	ml    *memberlist.Memberlist // nil for a standalone node
	addr  string                 // the advertised gossip address
	grpc  string                 // the advertised addresses, hosts resolved
	http  string
	start time.Time

	leavingSelf atomic.Bool

	mu      sync.Mutex
	members map[string]*Member // by name; the local member's entry is memberlist's view of it
	leaving map[string]bool    // members that said they are leaving (a message of their own)
	events  []Event            // for OnChange, in order
	wake    chan struct{}      // something in events
	left    bool               // Leave returned

	life         sync.Mutex // Leave and Shutdown, which memberlist must not run at once
	shut         bool
	stop         chan struct{}
	wg           sync.WaitGroup
	shutdownOnce sync.Once
	shutdownErr  error
}

// Start joins the gossip cluster: it listens on cfg.BindAddr, joins
// through cfg.Join (once, then in the background while alone), and
// advertises the member's status every cfg.MetaInterval until Leave or
// Shutdown. Call Shutdown when done, even after Leave: memberlist's
// goroutines run until then.
func Start(cfg Config) (*Node, error) {
	if err := cfg.validate(true); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	n := newNode(cfg)

	host, port, _ := splitHostPort(cfg.BindAddr)
	if host == "" {
		host = "0.0.0.0"
	}
	mlLog := newLogger(n.log)
	var transport memberlist.NodeAwareTransport
	var err error
	for range 10 { // port 0 takes a free TCP port, and UDP's of the same number may be taken
		transport, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{host}, BindPort: port, Logger: mlLog})
		if err == nil || port != 0 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("topology: listen on %s: %w", cfg.BindAddr, err)
	}
	bound := transport.(*memberlist.NetTransport).GetAutoBindPort()
	advHost, advPort := "", bound
	if cfg.AdvertiseAddr != "" {
		advHost, advPort, _ = splitAdvertise(cfg.AdvertiseAddr)
		if advPort == 0 {
			advPort = bound
		}
	}
	ip, advPort, err := transport.FinalAdvertiseAddr(advHost, advPort)
	if err != nil {
		_ = transport.Shutdown()
		return nil, fmt.Errorf("topology: advertise address: %w", err)
	}
	n.addr = net.JoinHostPort(ip.String(), strconv.Itoa(advPort))
	n.grpc, n.http = withHost(cfg.GRPCAddr, ip.String()), withHost(cfg.HTTPAddr, ip.String())
	if err := checkMetaSize(&cfg, n.grpc, n.http); err != nil {
		_ = transport.Shutdown()
		return nil, err
	}
	if cfg.wrapTransport != nil {
		transport = cfg.wrapTransport(transport)
	}

	mc, _ := cfg.memberlistConfig()
	mc.Name = cfg.Name()
	mc.Transport = transport
	mc.BindAddr, mc.BindPort = host, bound
	mc.AdvertiseAddr, mc.AdvertisePort = ip.String(), advPort
	mc.Delegate = delegate{n}
	mc.Events = events{n}
	mc.Logger = mlLog
	if cfg.OnChange != nil {
		n.run(n.dispatch)
	}
	if n.ml, err = memberlist.Create(mc); err != nil {
		_ = transport.Shutdown()
		close(n.stop)
		n.wg.Wait()
		return nil, fmt.Errorf("topology: start gossip on %s: %w", cfg.BindAddr, err)
	}
	if len(cfg.Join) > 0 {
		if k, err := n.ml.Join(cfg.Join); err != nil {
			n.log.Warn("topology: no member to join answered; trying again in the background", "join", cfg.Join, "err", err)
		} else {
			n.log.Info("topology: joined the cluster", "contacted", k, "members", n.ml.NumMembers())
		}
	}
	n.run(n.heartbeat)
	if len(cfg.Join) > 0 {
		n.run(n.rejoin)
	}
	n.log.Info("topology: gossiping", "gossip", n.addr, "profile", cfg.Profile, "grpc", n.grpc, "http", n.http)
	return n, nil
}

// Standalone returns a Node in no cluster: Members lists the local member
// alone, and OnChange is never called. For an edge that gossips with no
// one; it runs no goroutine.
func Standalone(cfg Config) (*Node, error) {
	if err := cfg.validate(false); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	n := newNode(cfg)
	n.grpc, n.http = cfg.GRPCAddr, cfg.HTTPAddr
	return n, nil
}

func newNode(cfg Config) *Node {
	return &Node{cfg: cfg, log: cfg.Logger.With("member", cfg.Name()), start: time.Now(),
		members: map[string]*Member{}, leaving: map[string]bool{}, wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

// run runs f in a goroutine that Shutdown waits for.
func (n *Node) run(f func()) {
	n.wg.Add(1)
	go func() { defer n.wg.Done(); f() }()
}

// withHost replaces the unspecified host of addr (":7300", "0.0.0.0:7300",
// "[::]:7300") by host.
func withHost(addr, host string) string {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(h); h == "" || ip != nil && ip.IsUnspecified() {
		return net.JoinHostPort(host, p)
	}
	return addr
}

// Addr is the gossip address the member advertises: what the others'
// Config.Join names. Empty for a standalone node.
func (n *Node) Addr() string { return n.addr }

// Name is the member's name in the cluster.
func (n *Node) Name() string { return n.cfg.Name() }

// Config returns the configuration, defaults applied.
func (n *Node) Config() Config { return n.cfg }

// HealthScore is memberlist's view of this member's own health (Lifeguard
// awareness): 0 is healthy; each step slows its probing by one
// ProbeInterval, up to 8. Always 0 for a standalone node.
func (n *Node) HealthScore() int {
	if n.ml == nil {
		return 0
	}
	return n.ml.GetHealthScore()
}

// Local is the local member, with its status as Config.Meta reports it now.
func (n *Node) Local() Member {
	state := StateAlive
	n.mu.Lock()
	if n.left {
		state = StateLeft
	}
	n.mu.Unlock()
	return Member{Name: n.cfg.Name(), Region: n.cfg.Region, NodeID: n.cfg.NodeID, GRPCAddr: n.grpc, HTTPAddr: n.http,
		GossipAddr: n.addr, State: state, StateSince: n.start, Status: n.cfg.Meta(), Updated: time.Now()}
}

// Members lists the members, sorted by name: the local one (as Local), the
// others as last heard, those that died or left for GoneRetention after.
func (n *Node) Members() []Member {
	self := n.Local()
	n.mu.Lock()
	out := make([]Member, 0, len(n.members)+1)
	for name, m := range n.members {
		if name != self.Name {
			out = append(out, *m)
		}
	}
	n.mu.Unlock()
	out = append(out, self)
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Leave tells the cluster this member is leaving, and waits up to timeout
// for the news to go out: the others list it as left, not dead. It keeps
// gossiping until Shutdown. Safe to call twice, and after Shutdown.
func (n *Node) Leave(timeout time.Duration) error {
	n.life.Lock()
	defer n.life.Unlock()
	if n.shut || n.ml == nil || n.leavingSelf.Load() {
		n.markLeft()
		return nil
	}
	n.leavingSelf.Store(true)
	// First say so — memberlist's leave message does not reach the others'
	// delegates as such, and must not overtake the news: a message to each
	// member, and the metadata — then leave.
	msg := append([]byte{msgLeaving}, n.cfg.Name()...)
	for _, m := range n.Members() {
		// Addresses from n's table: memberlist's Nodes change under it.
		if m.Name != n.cfg.Name() && !m.State.Gone() && m.GossipAddr != "" {
			if err := n.ml.SendToAddress(memberlist.Address{Addr: m.GossipAddr, Name: m.Name}, msg); err != nil {
				n.log.Debug("topology: leaving: message not sent", "to", m.Name, "err", err)
			}
		}
	}
	if err := n.ml.UpdateNode(timeout / 2); err != nil {
		n.log.Debug("topology: leaving: status update not acknowledged", "err", err)
	}
	err := n.ml.Leave(timeout / 2)
	n.markLeft()
	if err != nil {
		return fmt.Errorf("topology: leave: %w", err)
	}
	n.log.Info("topology: left the cluster")
	return nil
}

func (n *Node) markLeft() {
	n.mu.Lock()
	n.left = true
	n.mu.Unlock()
}

// Shutdown stops gossiping, at once: without Leave before, the others
// find the member dead. Safe to call twice.
func (n *Node) Shutdown() error {
	n.life.Lock()
	defer n.life.Unlock()
	n.shutdownOnce.Do(func() {
		n.shut = true
		close(n.stop)
		if n.ml != nil {
			if err := n.ml.Shutdown(); err != nil {
				n.shutdownErr = fmt.Errorf("topology: shutdown: %w", err)
			}
		}
		n.wg.Wait()
	})
	return n.shutdownErr
}

// heartbeat re-advertises the status every MetaInterval, and marks suspect
// the members not heard for SuspectAfter.
func (n *Node) heartbeat() {
	t := time.NewTicker(n.cfg.MetaInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.sweep(time.Now())
		if n.leavingSelf.Load() {
			continue
		}
		// UpdateNode waits for the broadcast to go out (or the timeout);
		// memberlist sends it to everyone through gossip either way.
		if err := n.ml.UpdateNode(n.cfg.MetaInterval); err != nil {
			n.log.Debug("topology: status update not yet broadcast", "err", err)
		}
	}
}

// rejoin joins the cluster again through Config.Join while this member
// knows no other alive one (none answered at Start, or a partition).
func (n *Node) rejoin() {
	t := time.NewTicker(n.cfg.RejoinInterval)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if n.leavingSelf.Load() || n.ml.NumMembers() > 1 {
			warned = false
			continue
		}
		if k, err := n.ml.Join(n.cfg.Join); err != nil {
			if !warned {
				n.log.Warn("topology: alone in the cluster, and no member to join answers", "join", n.cfg.Join, "err", err)
				warned = true
			}
		} else {
			n.log.Info("topology: joined the cluster", "contacted", k, "members", n.ml.NumMembers())
		}
	}
}

// sweep marks suspect the members not heard for SuspectAfter, and forgets
// those gone for GoneRetention.
func (n *Node) sweep(now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, m := range n.members {
		switch {
		case name == n.cfg.Name():
		case m.State == StateAlive && now.Sub(m.Updated) > n.cfg.SuspectAfter:
			n.change(m, StateSuspect, now)
		case m.State.Gone() && now.Sub(m.StateSince) > n.cfg.GoneRetention:
			delete(n.members, name)
			delete(n.leaving, name)
		}
	}
}

// change moves m to state, and queues the event. n.mu is held.
func (n *Node) change(m *Member, state State, now time.Time) {
	prev := m.State
	m.State, m.StateSince = state, now
	if m.Name != n.cfg.Name() {
		n.log.Debug("topology: member "+state.String(), "name", m.Name, "was", prev.String())
	}
	if n.cfg.OnChange != nil {
		n.events = append(n.events, Event{Member: *m, Previous: prev})
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
}

// dispatch calls OnChange for each event, in order.
func (n *Node) dispatch() {
	for {
		select {
		case <-n.stop:
			return
		case <-n.wake:
		}
		for {
			n.mu.Lock()
			if len(n.events) == 0 {
				n.mu.Unlock()
				break
			}
			ev := n.events[0]
			n.events = n.events[1:]
			n.mu.Unlock()
			n.cfg.OnChange(ev)
		}
	}
}

// heard records that node is alive, with the metadata it sent. Called by
// memberlist, with its lock held: it must not call memberlist.
func (n *Node) heard(node *memberlist.Node) {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	m, ok := n.members[node.Name]
	if !ok {
		m = &Member{Name: node.Name, State: StateDead}
		n.members[node.Name] = m
	}
	m.GossipAddr = node.Address()
	m.Updated = now
	if meta, ok := decodeMeta(node.Meta); ok {
		m.Region, m.NodeID, m.GRPCAddr, m.HTTPAddr = meta.GetRegion(), meta.GetNodeId(), meta.GetGrpc(), meta.GetHttp()
		m.Status = statusOf(meta)
	}
	if m.State != StateAlive {
		if m.State.Gone() {
			delete(n.leaving, node.Name) // back
		}
		n.change(m, StateAlive, now)
	}
}

// gone records that memberlist declared node dead, or that it left: left
// when it said it was leaving (a message, or its last metadata). Called by
// memberlist, with its lock held.
func (n *Node) gone(node *memberlist.Node) {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	m, ok := n.members[node.Name]
	if !ok {
		m = &Member{Name: node.Name, GossipAddr: node.Address()}
		n.members[node.Name] = m
	}
	state := StateDead
	if meta, ok := decodeMeta(node.Meta); ok && meta.GetLeaving() || n.leaving[node.Name] {
		state = StateLeft
	}
	if m.State != state {
		n.change(m, state, now)
	}
}

// delegate gives memberlist the member's metadata.
type delegate struct{ n *Node }

func (d delegate) NodeMeta(limit int) []byte {
	b := encodeMeta(&d.n.cfg, d.n.grpc, d.n.http, d.n.cfg.Meta(), d.n.leavingSelf.Load(), time.Now())
	if len(b) > limit { // encodeMeta keeps within memberlist.MetaMaxSize, the only limit memberlist passes
		return nil
	}
	return b
}

// msgLeaving starts a member's message that it is leaving; its name
// follows.
const msgLeaving = 'L'

// NotifyMsg takes the others' messages. Called by memberlist's packet
// handler, without its locks.
func (d delegate) NotifyMsg(b []byte) {
	if len(b) > 1 && b[0] == msgLeaving {
		d.n.mu.Lock()
		d.n.leaving[string(b[1:])] = true
		d.n.mu.Unlock()
	}
}

func (delegate) GetBroadcasts(int, int) [][]byte { return nil }
func (delegate) LocalState(bool) []byte          { return nil }
func (delegate) MergeRemoteState([]byte, bool)   {}

// events follows memberlist's view of the members.
type events struct{ n *Node }

func (e events) NotifyJoin(node *memberlist.Node)   { e.n.heard(node) }
func (e events) NotifyUpdate(node *memberlist.Node) { e.n.heard(node) }
func (e events) NotifyLeave(node *memberlist.Node)  { e.n.gone(node) }
