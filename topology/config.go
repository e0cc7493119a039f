package topology

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// Profile is a preset of gossip timings (memberlist's probe, suspicion and
// gossip intervals). Every member of a cluster should use the same one.
type Profile string

// The profiles. See the package documentation for their timings and the
// failure-detection bounds they give.
const (
	// ProfileWAN suits edges in regions far apart (round trips up to a few
	// hundred milliseconds): memberlist's WAN timings. The default.
	ProfileWAN Profile = "wan"
	// ProfileLAN suits edges within one data center: memberlist's LAN
	// timings.
	ProfileLAN Profile = "lan"
	// ProfileLocal is for tests on loopback: fast probes, failures seen
	// within seconds.
	ProfileLocal Profile = "local"
)

// ParseProfile parses "wan", "lan" or "local".
func ParseProfile(s string) (Profile, error) {
	switch p := Profile(s); p {
	case ProfileWAN, ProfileLAN, ProfileLocal:
		return p, nil
	case "":
		return ProfileWAN, nil
	}
	return "", fmt.Errorf("topology: unknown gossip profile %q (want wan, lan or local)", s)
}

// Status is what a member reports about itself, refreshed every
// MetaInterval through Config.Meta.
type Status struct {
	// BacklogRecords and BacklogBytes are the WAL's records not yet
	// acknowledged by the primary, and their bytes.
	BacklogRecords, BacklogBytes int64
	// OldestUnshipped is the age of the oldest of them (0 when none).
	OldestUnshipped time.Duration
	// WithinBudget tells whether the edge meets its latency budgets; Over
	// names the budget it misses (short: it is cut to fit the metadata).
	WithinBudget bool
	Over         string
	// Full: the WAL reached its quota and pushes are refused.
	Full bool
	// Draining: the edge is stopping and takes no new pushes.
	Draining bool
}

// Config configures a Node. Region and NodeID are required, and BindAddr
// for Start; the zero value of every other field means its default.
type Config struct {
	// Region and NodeID name the member; NodeName, its name in the cluster,
	// is "Region/NodeID" unless set. Names must be unique in the cluster.
	Region, NodeID, NodeName string
	// BindAddr is the gossip address (UDP and TCP) to listen on, host:port;
	// port 0 picks a free one (see Node.Addr). Required by Start.
	BindAddr string
	// AdvertiseAddr is the gossip address the others reach this member on,
	// host or host:port. Default: BindAddr's host (a private address of the
	// machine when that is 0.0.0.0) and the bound port.
	AdvertiseAddr string
	// Join are gossip addresses of members to join through (host:port); an
	// own address among them is harmless, so every member can be given the
	// same list. When none answers, Start still succeeds and the member
	// keeps trying in the background, as it does whenever it finds itself
	// alone.
	Join []string
	// GRPCAddr and HTTPAddr are the addresses the member advertises for its
	// Ingest service and its HTTP API. A host left unspecified (":7300",
	// "0.0.0.0:7300") is replaced by the advertised gossip host.
	GRPCAddr, HTTPAddr string
	// Meta returns the member's status; called every MetaInterval, and by
	// Local. It must not block. Default: an empty status, within budget.
	Meta func() Status
	// Profile chooses the gossip timings. Default ProfileWAN.
	Profile Profile
	// ProbeInterval overrides the profile's: how often this member probes
	// another (one per interval, round robin). When set without
	// ProbeTimeout, the profile's ratio of timeout to interval is kept.
	ProbeInterval time.Duration
	// ProbeTimeout overrides the profile's: how long a direct probe waits
	// for its ack before asking others to probe indirectly. Must be under
	// half of ProbeInterval, so that indirect probes' nacks arrive in time.
	ProbeTimeout time.Duration
	// SuspicionMult overrides the profile's: a suspected member is declared
	// dead after SuspicionMult × max(1, log10 n) × ProbeInterval at the
	// least (n members), and up to SuspicionMaxTimeoutMult (the profile's)
	// times that without confirmations from others.
	SuspicionMult int
	// MetaInterval is how often the member re-advertises its status (a
	// heartbeat, gossiped to all). Default 1s (local profile: 100ms).
	MetaInterval time.Duration
	// SuspectAfter: a member memberlist still counts alive but whose
	// heartbeat was not heard for this long is listed as suspect. Default
	// 10s (lan: 5s, local: 1s).
	SuspectAfter time.Duration
	// GoneRetention is how long a member that died or left stays listed.
	// Default 10m.
	GoneRetention time.Duration
	// RejoinInterval is how often a member alone in its cluster tries Join
	// again. Default 10s (local: 200ms).
	RejoinInterval time.Duration
	// OnChange, when set, is called for every change of a member's state
	// (not for the status updates of every heartbeat), in order, from one
	// goroutine of the Node's: it may block, but later changes wait behind
	// it. Shutdown waits for the call under way.
	OnChange func(Event)
	// Logger receives memberlist's log lines at their levels. Default
	// slog.Default().
	Logger *slog.Logger
	// SecretKey, when set, encrypts and authenticates every gossip message
	// (memberlist's AES-GCM keyring): members without the same key can
	// neither read nor join the cluster. 16, 24 or 32 bytes (AES-128, -192,
	// -256). Default: none, gossip in plain text.
	SecretKey []byte

	// wrapTransport, when set, wraps the gossip transport (tests delay a
	// member's packets with it).
	wrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
}

// Name is the member's name in the cluster.
func (c *Config) Name() string {
	if c.NodeName != "" {
		return c.NodeName
	}
	return c.Region + "/" + c.NodeID
}

// profileDefaults are the Config fields a profile sets beside memberlist's
// own configuration.
type profileDefaults struct {
	metaInterval, suspectAfter, rejoinInterval time.Duration
}

// memberlistConfig returns memberlist's configuration of the profile, with
// the overrides applied.
func (c *Config) memberlistConfig() (*memberlist.Config, profileDefaults) {
	var mc *memberlist.Config
	var pd profileDefaults
	switch c.Profile {
	case ProfileLAN:
		mc = memberlist.DefaultLANConfig()
		// memberlist's 500ms is half the interval: the nacks of indirect
		// probes (sent after a probe timeout of their own) would arrive at
		// the deadline, and the prober count itself unhealthy.
		mc.ProbeTimeout = 400 * time.Millisecond
		pd = profileDefaults{time.Second, 5 * time.Second, 10 * time.Second}
	case ProfileLocal:
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 200 * time.Millisecond
		mc.ProbeTimeout = 50 * time.Millisecond
		mc.IndirectChecks = 3
		mc.RetransmitMult = 3
		mc.SuspicionMult = 4
		mc.SuspicionMaxTimeoutMult = 3
		mc.GossipInterval = 50 * time.Millisecond
		mc.GossipNodes = 3
		mc.PushPullInterval = 5 * time.Second
		mc.GossipToTheDeadTime = 5 * time.Second
		mc.TCPTimeout = 2 * time.Second
		pd = profileDefaults{100 * time.Millisecond, time.Second, 200 * time.Millisecond}
	default:
		mc = memberlist.DefaultWANConfig()
		// memberlist's 3s would put the indirect probes' nacks (2 × 3s)
		// past the 5s probe deadline; 2s still allows for round trips of
		// hundreds of milliseconds.
		mc.ProbeTimeout = 2 * time.Second
		pd = profileDefaults{time.Second, 10 * time.Second, 10 * time.Second}
	}
	if c.ProbeInterval > 0 {
		if c.ProbeTimeout == 0 {
			mc.ProbeTimeout = time.Duration(float64(c.ProbeInterval) * float64(mc.ProbeTimeout) / float64(mc.ProbeInterval))
		}
		mc.ProbeInterval = c.ProbeInterval
	}
	if c.ProbeTimeout > 0 {
		mc.ProbeTimeout = c.ProbeTimeout
	}
	if c.SuspicionMult > 0 {
		mc.SuspicionMult = c.SuspicionMult
	}
	// Labels and compression stay memberlist's defaults (none, on);
	// encryption is on with a SecretKey.
	mc.SecretKey = c.SecretKey
	mc.LogOutput = nil
	return mc, pd
}

func (c *Config) setDefaults() {
	if c.Profile == "" {
		c.Profile = ProfileWAN
	}
	_, pd := c.memberlistConfig()
	if c.MetaInterval == 0 {
		c.MetaInterval = pd.metaInterval
	}
	if c.SuspectAfter == 0 {
		c.SuspectAfter = max(pd.suspectAfter, 3*c.MetaInterval)
	}
	if c.GoneRetention == 0 {
		c.GoneRetention = 10 * time.Minute
	}
	if c.RejoinInterval == 0 {
		c.RejoinInterval = pd.rejoinInterval
	}
	if c.Meta == nil {
		c.Meta = func() Status { return Status{WithinBudget: true} }
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// validate checks what both Start and Standalone need; gossip adds the
// addresses and the size of the metadata.
func (c *Config) validate(gossip bool) error {
	var errs []error
	if c.Region == "" {
		errs = append(errs, errors.New("topology: Region is required"))
	}
	if c.NodeID == "" {
		errs = append(errs, errors.New("topology: NodeID is required"))
	}
	if _, err := ParseProfile(string(c.Profile)); err != nil {
		errs = append(errs, err)
	}
	mc, _ := c.memberlistConfig()
	if mc.ProbeInterval <= 0 || mc.ProbeTimeout <= 0 || 2*mc.ProbeTimeout >= mc.ProbeInterval {
		errs = append(errs, fmt.Errorf("topology: ProbeTimeout (%s) must be positive and under half of ProbeInterval (%s)", mc.ProbeTimeout, mc.ProbeInterval))
	}
	if mc.SuspicionMult < 1 {
		errs = append(errs, fmt.Errorf("topology: SuspicionMult must be at least 1, got %d", mc.SuspicionMult))
	}
	if n := len(c.SecretKey); n != 0 && n != 16 && n != 24 && n != 32 {
		errs = append(errs, fmt.Errorf("topology: SecretKey must be 16, 24 or 32 bytes, got %d", n))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"MetaInterval", c.MetaInterval}, {"SuspectAfter", c.SuspectAfter}, {"GoneRetention", c.GoneRetention}, {"RejoinInterval", c.RejoinInterval}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("topology: %s must not be negative, got %s", d.name, d.v))
		}
	}
	if gossip {
		if _, _, err := splitHostPort(c.BindAddr); err != nil {
			errs = append(errs, fmt.Errorf("topology: BindAddr: %w", err))
		}
		if c.AdvertiseAddr != "" {
			if _, _, err := splitAdvertise(c.AdvertiseAddr); err != nil {
				errs = append(errs, fmt.Errorf("topology: AdvertiseAddr: %w", err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil || !gossip {
		return err
	}
	return checkMetaSize(c, c.GRPCAddr, c.HTTPAddr)
}

// checkMetaSize fails when the metadata would not fit memberlist's limit
// (memberlist panics beyond it) with room for Status.Over, whatever the
// status: only Over is cut at run time.
func checkMetaSize(c *Config, grpcAddr, httpAddr string) error {
	worst := Status{BacklogRecords: math.MaxInt64, BacklogBytes: math.MaxInt64, OldestUnshipped: math.MaxInt64, Full: true, Draining: true}
	if n := len(encodeMeta(c, grpcAddr, httpAddr, worst, true, time.Unix(1<<40, 0))); n+minOver > memberlist.MetaMaxSize {
		return fmt.Errorf("topology: region %q, node id %q and the addresses %q and %q take %d bytes of gossip metadata, over the %d that memberlist allows with %d for the budget reason: shorten them",
			c.Region, c.NodeID, grpcAddr, httpAddr, n, memberlist.MetaMaxSize, minOver)
	}
	return nil
}

// DetectionBound is how long, at the most, every live member of a cluster
// of n members (the dead one included) takes to declare dead a member that
// stopped answering (killed, or cut off), with this configuration — as long
// as the observers are healthy themselves (memberlist's Lifeguard awareness
// at 0; an observer that misses its own deadlines probes up to 8× slower):
//
//	(2n−2) × ProbeInterval                      each observer probes every other member once per
//	                                            round of n−1 probes, in an order shuffled each round:
//	                                            the dead member is probed again within 2n−3
//	                                            intervals, and that probe fails within one more
//	+ SuspicionMaxTimeoutMult × SuspicionMult × max(1, log10 n) × ProbeInterval
//	                                            the suspicion timeout before it declares the member
//	                                            dead; it shrinks to 1/SuspicionMaxTimeoutMult of
//	                                            that as other members confirm the suspicion, and
//	                                            is that minimum from the start when fewer than
//	                                            SuspicionMult members can confirm
//
// Gossip usually makes it much faster: the first observer to declare the
// member dead tells the others within a few gossip intervals.
func (c Config) DetectionBound(n int) time.Duration {
	c.setDefaults()
	mc, _ := c.memberlistConfig()
	n = max(n, 2)
	probes := time.Duration(2*n-2) * mc.ProbeInterval
	scale := math.Max(1, math.Log10(float64(n)))
	minTimeout := time.Duration(float64(mc.SuspicionMult) * scale * float64(mc.ProbeInterval))
	timeout := minTimeout
	if k := mc.SuspicionMult - 2; k >= 1 && n-2 >= k {
		timeout = time.Duration(mc.SuspicionMaxTimeoutMult) * minTimeout
	}
	return probes + timeout
}

// Timings are the gossip timings a configuration resolves to.
type Timings struct {
	ProbeInterval, ProbeTimeout, GossipInterval, PushPullInterval       time.Duration
	SuspicionMult, SuspicionMaxTimeoutMult, IndirectChecks, GossipNodes int
	MetaInterval, SuspectAfter                                          time.Duration
}

// Timings returns the gossip timings of the configuration, defaults and
// overrides applied.
func (c Config) Timings() Timings {
	c.setDefaults()
	mc, _ := c.memberlistConfig()
	return Timings{ProbeInterval: mc.ProbeInterval, ProbeTimeout: mc.ProbeTimeout, GossipInterval: mc.GossipInterval,
		PushPullInterval: mc.PushPullInterval, SuspicionMult: mc.SuspicionMult, SuspicionMaxTimeoutMult: mc.SuspicionMaxTimeoutMult,
		IndirectChecks: mc.IndirectChecks, GossipNodes: mc.GossipNodes, MetaInterval: c.MetaInterval, SuspectAfter: c.SuspectAfter}
}

// splitHostPort splits host:port with a numeric port.
func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	if host != "" && net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("%q: the host must be an IP address", addr)
	}
	return host, port, nil
}

// splitAdvertise splits an advertise address, host or host:port (port 0
// when absent).
func splitAdvertise(addr string) (string, int, error) {
	if net.ParseIP(addr) != nil {
		return addr, 0, nil
	}
	host, port, err := splitHostPort(addr)
	if err == nil && host == "" {
		err = fmt.Errorf("%q: a host is required", addr)
	}
	return host, port, err
}
