package devstack

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/edge"
)

// Defaults of Config.
const (
	DefaultBasePort      = 7300
	DefaultNearRTT       = 2 * time.Millisecond
	DefaultFarRTT        = 80 * time.Millisecond
	DefaultAssets        = 3000
	DefaultBigAssets     = 3
	DefaultBigInsights   = 20_000
	DefaultInterval      = 2 * time.Minute
	DefaultFastBudget    = time.Second
	DefaultSyntheticSlow = 3 * time.Second
	DefaultEvery         = 5 * time.Second
	DefaultDrainTimeout  = 15 * time.Second
	DefaultAbandonAfter  = 5 * time.Second
	DefaultPartitions    = 8
)

// The stack's layout: regions and their edges, fixed so that the ports and
// the commands printed for them stay the same from run to run.
const (
	// NearRegion is the region beside the primary, FarRegion the one across
	// the WAN link.
	NearRegion = "eu"
	FarRegion  = "us"
)

// edgeSpec is one edge of the layout.
type edgeSpec struct {
	name   string // as printed and as --port names it: eu-1
	region string
	node   string // node id; the edge id in the primary's ledger is region/node
}

var edgeSpecs = []edgeSpec{
	{"eu-1", NearRegion, "1"},
	{"eu-2", NearRegion, "2"},
	{"us-1", FarRegion, "1"},
}

// Regions lists the stack's regions, the near one first.
var Regions = []string{NearRegion, FarRegion}

// Port names, as Config.Ports keys them (and `longhaul dev --port` takes
// them), with their default ports (DefaultBasePort 7300).
var portDefaults = []struct {
	name string
	port int
	what string
}{
	{"eu-1", 7300, "edge eu-1, gRPC"},
	{"eu-1-http", 7301, "edge eu-1, HTTP"},
	{"eu-2", 7310, "edge eu-2, gRPC"},
	{"eu-2-http", 7311, "edge eu-2, HTTP"},
	{"us-1", 7320, "edge us-1, gRPC"},
	{"us-1-http", 7321, "edge us-1, HTTP"},
	{"primary", 7400, "primary, gRPC"},
	{"primary-http", 7401, "primary, HTTP"},
	{"scheduler", 7500, "scheduler, HTTP"},
	{"checkers-eu", 7600, "checkers of eu, HTTP (metrics)"},
	{"checkers-us", 7610, "checkers of us, HTTP (metrics)"},
	{"eu-1-gossip", 7946, "edge eu-1, gossip (TCP and UDP)"},
	{"eu-2-gossip", 7947, "edge eu-2, gossip (TCP and UDP)"},
	{"us-1-gossip", 7948, "edge us-1, gossip (TCP and UDP)"},
}

// PortNames returns the names of the ports, in the order of their default
// numbers, each with what listens on it.
func PortNames() [][2]string {
	out := make([][2]string, len(portDefaults))
	for i, p := range portDefaults {
		out[i] = [2]string{p.name, p.what}
	}
	return out
}

// DefaultPorts returns every port of the stack, all shifted by the same
// amount so that base is eu-1's gRPC port: DefaultPorts(7300) is the
// default layout, DefaultPorts(8300) puts the primary on 8400. Base 0 gives
// every port 0: each listener takes a free port (printed at start).
func DefaultPorts(base int) map[string]int {
	m := make(map[string]int, len(portDefaults))
	for _, p := range portDefaults {
		if base == 0 {
			m[p.name] = 0
		} else {
			m[p.name] = p.port - DefaultBasePort + base
		}
	}
	return m
}

// PortError is a port of the stack that another process holds.
type PortError struct {
	Name string // as in Config.Ports
	Port int
	Err  error
}

func (e *PortError) Error() string {
	return fmt.Sprintf("devstack: port %d (%s) is taken: %v", e.Port, e.Name, e.Err)
}

func (e *PortError) Unwrap() error { return e.Err }

// Config configures a development stack. The zero value is the default
// stack: a throwaway PostgreSQL, kfake, the default ports, 3,000 assets.
type Config struct {
	// Dir holds everything the stack writes: PostgreSQL's cluster (pg/),
	// the edges' WALs (edges/), the certificates (certs/, with TLS) and
	// the pieces' log at info level (longhaul.log). Default: a new
	// temporary directory, removed by Stop unless Keep. A Dir given here is
	// never removed, and is picked up again by the next run: PostgreSQL's
	// data and the WALs are reused.
	Dir string
	// Keep leaves a temporary Dir in place at Stop.
	Keep bool
	// DatabaseURL is the PostgreSQL to use. Default: a throwaway cluster
	// from the machine's binaries (internal/pgcluster) in Dir/pg.
	DatabaseURL string
	// KafkaBrokers are the Kafka brokers to use. Default: an in-process
	// kfake cluster (internal/kafka.StartEmbedded).
	KafkaBrokers []string
	// Ports are the ports on 127.0.0.1, by name (see PortNames). Default
	// DefaultPorts(DefaultBasePort); names left out take that default;
	// 0 takes a free port.
	Ports map[string]int
	// NearRTT is the round trip the near region's edges ship across (an
	// in-process toxiproxy link); 0 ships directly. Default 2ms.
	NearRTT time.Duration
	// FarRTT is the round trip of the far region's link. Default 80ms.
	FarRTT time.Duration
	// Budgets are the regions' latency budgets. Default: eu ack 50ms,
	// visible 1s; us ack 50ms, visible 2s.
	Budgets map[string]edge.Budget
	// Assets is how many synthetic assets are registered, across the
	// plans and 1 account per 100 assets. Default 3000. Negative: none.
	Assets int
	// BigAssets are assets of their own account named "big-N.example",
	// whose scans report BigInsights insights each (large batches: the
	// COPY path). Default 3. Negative: none.
	BigAssets   int
	BigInsights int
	// Interval is the scan interval of every plan, short so that scans
	// flow at once (a new asset's first scan falls at random within it).
	// Default 2m.
	Interval time.Duration
	// Synthetic shapes the synthetic check's scans. Zero fields take the
	// defaults of checks.SyntheticConfig, except Slow (3s).
	Synthetic checks.SyntheticConfig
	// FastBudget: a fast-lane scan taking longer is handed to the slow
	// lane. Default 1s.
	FastBudget time.Duration
	// AbandonAfter is how long running scans may take to finish at Stop.
	// Default 5s.
	AbandonAfter time.Duration
	// Partitions of the Kafka topics. Default 8.
	Partitions int
	// TLS makes development certificates (tlsconf.WriteDev, into
	// Dir/certs) and serves every listener that supports TLS with them:
	// the primary (mutual TLS: edges present theirs) and the scheduler.
	TLS bool
	// Every is how often Run prints the regions' lines. Default 5s.
	Every time.Duration
	// DrainTimeout bounds how long Stop waits for the edges to ship what
	// they hold before stopping them. Default 15s.
	DrainTimeout time.Duration
	// Logger receives the pieces' logs (besides Dir/longhaul.log, which
	// gets them from info up). Default: discarded.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	ports := DefaultPorts(DefaultBasePort)
	for name, p := range c.Ports {
		ports[name] = p
	}
	c.Ports = ports
	if c.NearRTT == 0 {
		c.NearRTT = DefaultNearRTT
	}
	if c.FarRTT == 0 {
		c.FarRTT = DefaultFarRTT
	}
	budgets := map[string]edge.Budget{
		NearRegion: {AckP99: 50 * time.Millisecond, VisibleP99: time.Second},
		FarRegion:  {AckP99: 50 * time.Millisecond, VisibleP99: 2 * time.Second},
	}
	for r, b := range c.Budgets {
		budgets[r] = b
	}
	c.Budgets = budgets
	if c.Assets == 0 {
		c.Assets = DefaultAssets
	}
	if c.BigAssets == 0 {
		c.BigAssets = DefaultBigAssets
	}
	if c.BigInsights == 0 {
		c.BigInsights = DefaultBigInsights
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Synthetic.Slow == 0 {
		c.Synthetic.Slow = DefaultSyntheticSlow
	}
	if c.FastBudget == 0 {
		c.FastBudget = DefaultFastBudget
	}
	if c.AbandonAfter == 0 {
		c.AbandonAfter = DefaultAbandonAfter
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Every == 0 {
		c.Every = DefaultEvery
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("devstack: "+format, args...))
		}
	}
	known := map[string]bool{}
	for _, p := range portDefaults {
		known[p.name] = true
	}
	names := make([]string, 0, len(c.Ports))
	for name := range c.Ports {
		names = append(names, name)
	}
	slices.Sort(names)
	used := map[int]string{}
	for _, name := range names {
		p := c.Ports[name]
		check(known[name], "unknown port name %q", name)
		check(p >= 0 && p <= 65535, "port %s: %d is out of range", name, p)
		if other, dup := used[p]; dup && p != 0 {
			check(false, "ports %s and %s are both %d", other, name, p)
		}
		used[p] = name
	}
	check(c.NearRTT >= 0, "NearRTT must not be negative, got %v", c.NearRTT)
	check(c.FarRTT >= 0, "FarRTT must not be negative, got %v", c.FarRTT)
	check(c.BigInsights > 0 && c.BigInsights <= checks.MaxBigInsights, "BigInsights must be in [1, %d], got %d", checks.MaxBigInsights, c.BigInsights)
	check(c.Interval > 0, "Interval must be positive, got %v", c.Interval)
	check(c.FastBudget > 0, "FastBudget must be positive, got %v", c.FastBudget)
	check(c.AbandonAfter > 0, "AbandonAfter must be positive, got %v", c.AbandonAfter)
	check(c.Partitions >= 1, "Partitions must be at least 1, got %d", c.Partitions)
	check(c.Every > 0, "Every must be positive, got %v", c.Every)
	check(c.DrainTimeout > 0, "DrainTimeout must be positive, got %v", c.DrainTimeout)
	if err := c.Synthetic.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("devstack: %w", err))
	}
	return errors.Join(errs...)
}

// addr is the loopback address of a named port.
func (c *Config) addr(name string) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Ports[name]))
}

// checkPorts fails with a *PortError on the first fixed port another
// process holds, before anything starts (PostgreSQL takes seconds to start;
// a taken port should not wait for it). Gossip ports are checked for TCP
// and UDP.
func (c *Config) checkPorts() error {
	for _, p := range portDefaults {
		port := c.Ports[p.name]
		if port == 0 {
			continue
		}
		a := c.addr(p.name)
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return &PortError{Name: p.name, Port: port, Err: err}
		}
		_ = ln.Close()
		if isGossip(p.name) {
			pc, err := net.ListenPacket("udp", a)
			if err != nil {
				return &PortError{Name: p.name, Port: port, Err: err}
			}
			_ = pc.Close()
		}
	}
	return nil
}

func isGossip(name string) bool {
	return len(name) > 7 && name[len(name)-7:] == "-gossip"
}
