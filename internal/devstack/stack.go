package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/checker"
	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/kafka"
	"github.com/longhaul/longhaul/internal/pgcluster"
	"github.com/longhaul/longhaul/internal/serve"
	"github.com/longhaul/longhaul/internal/wan"
	"github.com/longhaul/longhaul/primary"
	"github.com/longhaul/longhaul/pushclient"
	"github.com/longhaul/longhaul/scheduler"
	"github.com/longhaul/longhaul/topology"
)

// Stack is a running development stack. Start it, Run it (the status
// lines) until it should end, Stop it.
type Stack struct {
	cfg     Config
	log     *slog.Logger
	logFile *os.File
	ownDir  bool // Start made Dir: Stop removes it unless Keep
	certs   *certs

	pg          *pgcluster.Cluster // nil with Config.DatabaseURL
	databaseURL string
	kafka       *kafka.Embedded // nil with Config.KafkaBrokers
	brokers     []string
	primary     *primary.Service
	links       map[string]*wan.Link // by region; none for a region shipping directly
	edges       []*edgeRun
	scheduler   *scheduler.Service
	regions     []*regionCheckers
	assets      int // registered

	stopping atomic.Bool // Stop began

	runMu      sync.Mutex // guards runCancels against Stop
	runCancels []context.CancelFunc
	runs       sync.WaitGroup
	stopOnce   sync.Once
	stopErr    error
}

// edgeRun is one edge of the stack.
type edgeRun struct {
	spec edgeSpec
	svc  *edge.Service
}

// regionCheckers are the checkers of one region: a fast and a slow lane,
// each with its push client and topology.Picker (the region's edges
// first), as one `longhaul checker` process per lane would, sharing one
// metrics endpoint.
type regionCheckers struct {
	region   string
	pickers  []*topology.Picker
	pushes   []*pushclient.Client
	checkers []*checker.Checker
	http     *serve.HTTP
	httpAddr string
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// Start starts the stack, in order: PostgreSQL, Kafka, the primary, the WAN
// links, the edges (eu-1 first: the others join its gossip), the assets,
// the scheduler and the checkers. ctx bounds the start. On error what was
// started is stopped and, unless kept, removed.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := cfg.checkPorts(); err != nil {
		return nil, err
	}
	s := &Stack{cfg: cfg, links: map[string]*wan.Link{}}
	ok := false
	defer func() {
		if !ok {
			_ = s.Stop(context.WithoutCancel(ctx))
		}
	}()
	if err := s.makeDir(); err != nil {
		return nil, err
	}
	if cfg.TLS {
		var err error
		if s.certs, err = makeCerts(filepath.Join(s.cfg.Dir, "certs")); err != nil {
			return nil, err
		}
	}
	for _, step := range []func(context.Context) error{
		s.startDatabase, s.startKafka, s.startPrimary, s.startLinks, s.startEdges,
		s.registerAssets, s.startScheduler, s.startCheckers,
	} {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

// makeDir makes (or reuses) Dir and opens the log file in it.
func (s *Stack) makeDir() error {
	if s.cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "longhaul-dev-")
		if err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
		s.cfg.Dir, s.ownDir = dir, true
	} else {
		dir, err := filepath.Abs(s.cfg.Dir)
		if err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
		s.cfg.Dir = dir
	}
	// Run as root, PostgreSQL runs as the postgres user (pgcluster): it
	// must be able to reach its directory inside this one.
	if err := os.Chmod(s.cfg.Dir, 0o711); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.cfg.Dir, "longhaul.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("devstack: log file: %w", err)
	}
	s.logFile = f
	s.log = slog.New(closingFilter{teeHandler{s.cfg.Logger.Handler(), slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo})}, &s.stopping})
	return nil
}

func (s *Stack) startDatabase(ctx context.Context) error {
	if s.cfg.DatabaseURL != "" {
		s.databaseURL = s.cfg.DatabaseURL
		return nil
	}
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(s.cfg.Dir, "pg"), Keep: s.keeps(), Logger: s.log})
	if err != nil {
		return err
	}
	s.pg, s.databaseURL = c, c.URL(pgcluster.Database)
	return nil
}

func (s *Stack) startKafka(context.Context) error {
	if len(s.cfg.KafkaBrokers) > 0 {
		s.brokers = s.cfg.KafkaBrokers
		return nil
	}
	k, err := kafka.StartEmbedded(1, s.cfg.Partitions)
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	s.kafka, s.brokers = k, k.ListenAddrs()
	return nil
}

func (s *Stack) startPrimary(ctx context.Context) error {
	p, err := primary.Start(ctx, primary.Config{DatabaseURL: s.databaseURL,
		Listen: s.cfg.addr("primary"), HTTPListen: s.cfg.addr("primary-http"),
		TLS: s.certs.primary(), Logger: s.log.With("piece", "primary")})
	if err != nil {
		return err
	}
	s.primary = p
	return nil
}

// startLinks puts a toxiproxy link between each region and the primary.
func (s *Stack) startLinks(context.Context) error {
	for region, rtt := range map[string]time.Duration{NearRegion: s.cfg.NearRTT, FarRegion: s.cfg.FarRTT} {
		if rtt == 0 {
			continue
		}
		l, err := wan.Open(s.primary.Addr())
		if err != nil {
			return fmt.Errorf("devstack: %s link: %w", region, err)
		}
		s.links[region] = l
		l.SetRTT(rtt)
	}
	return nil
}

func (s *Stack) startEdges(ctx context.Context) error {
	var join []string
	for _, sp := range edgeSpecs {
		via := s.primary.Addr()
		if l := s.links[sp.region]; l != nil {
			via = l.Addr()
		}
		cfg := edge.Config{Region: sp.region, NodeID: sp.node,
			DataDir: filepath.Join(s.cfg.Dir, "edges", sp.name),
			Listen:  s.cfg.addr(sp.name), HTTPListen: s.cfg.addr(sp.name + "-http"),
			Primary: via, Budget: s.cfg.Budgets[sp.region], Logger: s.log.With("piece", "edge "+sp.name),
			Shipper: edge.ShipperConfig{DialOptions: s.certs.shipDial()},
			TLS:     s.certs.edge(), PeerTLS: s.certs.peer(),
			// Every edge is on this machine: the LAN timings fit, and a
			// far edge's gossip does not cross the WAN link (only its
			// shipping does).
			Gossip: topology.Config{BindAddr: s.cfg.addr(sp.name + "-gossip"), Join: join, Profile: topology.ProfileLAN},
		}
		svc, err := edge.Start(ctx, cfg)
		if err != nil {
			return fmt.Errorf("devstack: edge %s: %w", sp.name, err)
		}
		s.edges = append(s.edges, &edgeRun{spec: sp, svc: svc})
		if join == nil {
			join = []string{svc.Topology().Addr()}
		}
	}
	return nil
}

// Plans of the synthetic assets, in proportion: most assets are on the free
// plan, fewest on enterprise.
var assetPlans = []scheduler.Plan{
	scheduler.PlanFree, scheduler.PlanFree, scheduler.PlanFree, scheduler.PlanFree,
	scheduler.PlanPro, scheduler.PlanPro, scheduler.PlanPro,
	scheduler.PlanBusiness, scheduler.PlanBusiness,
	scheduler.PlanEnterprise,
}

// assetList is the stack's synthetic assets: one account per 100 assets,
// plans in the proportions of assetPlans, and the big ones each in an
// account of its own.
func (c *Config) assetList() []scheduler.Asset {
	n, big := max(c.Assets, 0), max(c.BigAssets, 0)
	accounts := max(1, n/100)
	out := make([]scheduler.Asset, 0, n+big)
	for i := range n {
		out = append(out, scheduler.Asset{AccountID: fmt.Sprintf("acct-%02d", i%accounts),
			Asset: fmt.Sprintf("host-%04d.example", i), Plan: assetPlans[i%len(assetPlans)],
			Checks: []string{checks.NameSynthetic}})
	}
	for i := range big {
		out = append(out, scheduler.Asset{AccountID: fmt.Sprintf("acct-big-%d", i),
			Asset: fmt.Sprintf("big-%d.example", c.BigInsights), Plan: scheduler.PlanEnterprise,
			Checks: []string{checks.NameSynthetic}})
	}
	return out
}

// intervals gives every plan the stack's interval.
func (c *Config) intervals() scheduler.Intervals {
	iv := scheduler.Intervals{}
	for _, p := range scheduler.Plans {
		iv[p] = c.Interval
	}
	return iv
}

// registerAssets writes the assets before the scheduler starts, so its
// first rate already counts them. The primary has migrated the schema.
func (s *Stack) registerAssets(ctx context.Context) error {
	assets := s.cfg.assetList()
	if len(assets) == 0 {
		return nil
	}
	pool, err := pgxpool.New(ctx, s.databaseURL)
	if err != nil {
		return fmt.Errorf("devstack: assets: %w", err)
	}
	defer pool.Close()
	if _, _, err := scheduler.RegisterAssets(ctx, pool, assets, time.Now(), s.cfg.intervals()); err != nil {
		return fmt.Errorf("devstack: assets: %w", err)
	}
	s.assets = len(assets)
	return nil
}

func (s *Stack) startScheduler(ctx context.Context) error {
	sc, err := scheduler.Start(ctx, scheduler.Config{DatabaseURL: s.databaseURL, Brokers: s.brokers,
		HTTPListen: s.cfg.addr("scheduler"), Partitions: int32(s.cfg.Partitions), Intervals: s.cfg.intervals(),
		TLS: s.certs.scheduler(), Logger: s.log.With("piece", "scheduler")})
	if err != nil {
		return err
	}
	s.scheduler = sc
	return nil
}

// startCheckers starts a fast and a slow checker per region. The lanes'
// consumer groups are global, as in production: the partitions of a lane
// are shared among its checkers of both regions, and each checker pushes
// to its own region's edges (topology.Picker with its region).
func (s *Stack) startCheckers(context.Context) error {
	cs, err := checks.Select([]string{checks.NameSynthetic}, checks.Options{Synthetic: s.cfg.Synthetic})
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	for _, region := range Regions {
		rc := &regionCheckers{region: region}
		s.regions = append(s.regions, rc)
		if err := s.startRegionCheckers(rc, cs); err != nil {
			return err
		}
	}
	return nil
}

func (s *Stack) startRegionCheckers(rc *regionCheckers, cs []checks.Check) error {
	log := s.log.With("piece", "checkers "+rc.region)
	var seeds []string
	for _, e := range s.edges {
		if e.spec.region == rc.region {
			seeds = append(seeds, e.svc.Addr())
		}
	}
	reg := serve.NewRegistry()
	ln, err := net.Listen("tcp", s.cfg.addr("checkers-"+rc.region))
	if err != nil {
		return fmt.Errorf("devstack: checkers %s: %w", rc.region, err)
	}
	rc.httpAddr = ln.Addr().String()
	rc.http = serve.StartHTTP(ln, serve.Mux(reg, nil), log)

	ctx, cancel := context.WithCancel(context.Background())
	rc.cancel = cancel
	for _, lane := range []longhaulv1.Lane{longhaulv1.Lane_FAST, longhaulv1.Lane_SLOW} {
		llog := log.With("lane", kafka.LaneName(lane))
		// A push client and a picker per lane, as two `longhaul checker`
		// processes would have: each orders the region's edges by a hash
		// of its own, so the lanes may push to different edges.
		picker, err := topology.NewPicker(topology.PickerConfig{Region: rc.region, Seeds: seeds,
			DialOptions: s.certs.pushDial(), Logger: llog})
		if err != nil {
			return fmt.Errorf("devstack: checkers %s: %w", rc.region, err)
		}
		rc.pickers = append(rc.pickers, picker)
		push, err := pushclient.New(pushclient.Config{Edges: seeds, Picker: picker,
			DialOptions: s.certs.pushDial(), Logger: llog, Metrics: reg})
		if err != nil {
			return fmt.Errorf("devstack: checkers %s: %w", rc.region, err)
		}
		rc.pushes = append(rc.pushes, push)
		c, err := checker.New(checker.Config{Brokers: s.brokers, Lane: lane, Checks: cs,
			Pusher: checker.FromPushClient(push), FastBudget: s.cfg.FastBudget, AbandonAfter: s.cfg.AbandonAfter,
			Logger: llog, Registry: reg})
		if err != nil {
			return fmt.Errorf("devstack: checkers %s: %w", rc.region, err)
		}
		rc.checkers = append(rc.checkers, c)
		rc.wg.Go(func() {
			if err := c.Run(ctx); err != nil {
				llog.Warn("checker stopped", "err", err)
			}
		})
	}
	return nil
}

// stop stops the region's checkers: running scans get AbandonAfter to
// finish and push, then the push clients and the pickers close.
func (rc *regionCheckers) stop(ctx context.Context) error {
	if rc.cancel != nil {
		rc.cancel()
	}
	rc.wg.Wait()
	var errs []error
	for _, p := range rc.pushes {
		errs = append(errs, p.Close())
	}
	for _, p := range rc.pickers {
		p.Close()
	}
	if rc.http != nil {
		errs = append(errs, rc.http.Stop(ctx))
	}
	return errors.Join(errs...)
}

// keeps reports whether Stop leaves Dir in place.
func (s *Stack) keeps() bool { return s.cfg.Keep || !s.ownDir }

// Dir is the directory the stack writes to.
func (s *Stack) Dir() string { return s.cfg.Dir }

// Kept reports whether Stop leaves Dir in place (Keep, or a Dir given).
func (s *Stack) Kept() bool { return s.keeps() }

// DatabaseURL is the PostgreSQL the stack writes to.
func (s *Stack) DatabaseURL() string { return s.databaseURL }

// Brokers are the Kafka brokers.
func (s *Stack) Brokers() []string { return s.brokers }

// EdgeAddrs returns the edges' gRPC and HTTP addresses by name (eu-1, eu-2,
// us-1).
func (s *Stack) EdgeAddrs() map[string][2]string {
	m := map[string][2]string{}
	for _, e := range s.edges {
		m[e.spec.name] = [2]string{e.svc.Addr(), e.svc.HTTPAddr()}
	}
	return m
}

// PushDialOptions are the gRPC dial options to push to the stack's edges
// (what its checkers use): TLS with the stack's CA when the edges serve
// TLS, plaintext otherwise.
func (s *Stack) PushDialOptions() []grpc.DialOption {
	if d := s.certs.pushDial(); d != nil {
		return d
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
}

// RegionStats returns the checkers' stats of a region, lanes summed.
func (s *Stack) RegionStats(region string) checker.Stats {
	var sum checker.Stats
	for _, rc := range s.regions {
		if rc.region != region {
			continue
		}
		for _, c := range rc.checkers {
			st := c.Stats()
			sum.Polled += st.Polled
			sum.Finished += st.Finished
			sum.Scans += st.Scans
			sum.Insights += st.Insights
			sum.HandedOn += st.HandedOn
			sum.Dead += st.Dead
			sum.Abandoned += st.Abandoned
			sum.Commits += st.Commits
			sum.InFlight += st.InFlight
		}
	}
	return sum
}

// Stop stops the stack in order: the scheduler (no new jobs), the checkers
// (running scans finish within AbandonAfter), the edges once they have
// shipped what they hold (within DrainTimeout), the links, the primary,
// Kafka and PostgreSQL; then it removes Dir unless it is kept. Safe to call
// twice.
func (s *Stack) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.runMu.Lock()
		s.stopping.Store(true)
		for _, cancel := range s.runCancels {
			cancel()
		}
		s.runMu.Unlock()
		s.runs.Wait()
		var errs []error
		add := func(what string, err error) {
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", what, err))
			}
		}
		if s.scheduler != nil {
			add("scheduler", s.scheduler.Stop(ctx))
		}
		var wg sync.WaitGroup
		regionErrs := make([]error, len(s.regions))
		for i, rc := range s.regions {
			wg.Go(func() { regionErrs[i] = rc.stop(ctx) })
		}
		wg.Wait()
		for i, rc := range s.regions {
			add("checkers "+rc.region, regionErrs[i])
		}
		if s.primary != nil {
			s.waitShipped(ctx)
		}
		// One after the other, the last started first: each leaves a
		// cluster whose other members are still there to hear it.
		for _, e := range slices.Backward(s.edges) {
			add("edge "+e.spec.name, e.svc.Stop(ctx))
		}
		for _, l := range s.links {
			l.Close()
		}
		if s.primary != nil {
			add("primary", s.primary.Stop(ctx))
		}
		if s.kafka != nil {
			s.kafka.Close()
		}
		if s.pg != nil {
			add("PostgreSQL", s.pg.Stop(ctx))
		}
		if s.logFile != nil {
			add("log file", s.logFile.Close())
		}
		if s.cfg.Dir != "" && !s.keeps() {
			add("remove "+s.cfg.Dir, os.RemoveAll(s.cfg.Dir))
		}
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}

// waitShipped waits until every edge's WAL is empty (all shipped and
// applied), DrainTimeout at the most.
func (s *Stack) waitShipped(ctx context.Context) {
	deadline := time.Now().Add(s.cfg.DrainTimeout)
	for {
		var left uint64
		for _, e := range s.edges {
			left += e.svc.WAL().Stats().Records
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.log.Warn("devstack: edges still hold insights not shipped; they stay in their WALs", "records", left)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// redactURL hides a password in a database URL.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Redacted()
}
