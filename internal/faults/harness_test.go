package faults

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/coalesce"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/wan"
	"github.com/longhaul/longhaul/primary"
	"github.com/longhaul/longhaul/wal"
)

// longEnv selects the long form of the matrix.
const longEnv = "LONGHAUL_FAULTS_LONG"

func long() bool { return os.Getenv(longEnv) != "" && os.Getenv(longEnv) != "0" }

// pick returns short in the short form, long in the long one.
func pick[T any](short, longForm T) T {
	if long() {
		return longForm
	}
	return short
}

// logger is what the services under test log to: nothing, unless
// LONGHAUL_FAULTS_DEBUG is set (then warnings and errors to stderr; never to
// t, which services may outlive by a moment).
func logger() *slog.Logger {
	if os.Getenv("LONGHAUL_FAULTS_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

// Generous bounds: a recovery that takes longer than these is a stuck
// component, not a slow machine.
const (
	resumeBound = 45 * time.Second // a shipper back to acknowledged batches after a fault ends
	drainBound  = 90 * time.Second // a backlog shipped once the fault is gone
)

// ---------------------------------------------------------------------------
// The database.

// db is a test's schema: url is what the primary connects with (its
// connections carry application_name app, so the test can watch them in
// pg_stat_activity); check is for the test's own connections.
type db struct {
	t     *testing.T
	url   string
	app   string
	check string
}

func newDB(t *testing.T) *db {
	t.Helper()
	base := pgtest.URL(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	app := "lh-primary-" + hex.EncodeToString(b)
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return &db{t: t, url: base + sep + "application_name=" + app, app: app, check: base}
}

// throughLink returns d's primary URL with a toxiproxy link in front of
// PostgreSQL, and the link.
func (d *db) throughLink() (string, *wan.Link) {
	d.t.Helper()
	u, err := url.Parse(d.url)
	if err != nil {
		d.t.Fatal(err)
	}
	link := wan.New(d.t, u.Host)
	u.Host = link.Addr()
	return u.String(), link
}

// conn runs f on a connection of its own, retrying for up to a minute
// while PostgreSQL cannot be reached (a test that restarts it).
func (d *db) conn(f func(ctx context.Context, c *pgx.Conn) error) error {
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, err := pgx.Connect(ctx, d.check)
		if err == nil {
			err = f(ctx, c)
			_ = c.Close(context.Background())
		}
		cancel()
		var pgErr interface{ SQLState() string }
		if err == nil || errors.As(err, &pgErr) && !strings.HasPrefix(pgErr.SQLState(), "57") || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *db) scalar(q string, args ...any) int64 {
	d.t.Helper()
	var n int64
	if err := d.conn(func(ctx context.Context, c *pgx.Conn) error { return c.QueryRow(ctx, q, args...).Scan(&n) }); err != nil {
		d.t.Fatalf("%s: %v", q, err)
	}
	return n
}

// watcher polls pg_stat_activity on one connection of its own.
type watcher struct {
	d *db
	c *pgx.Conn
}

func (d *db) watch() *watcher {
	d.t.Helper()
	c, err := pgx.Connect(context.Background(), d.check)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { _ = c.Close(context.Background()) })
	return &watcher{d: d, c: c}
}

// Conditions on the primary's backends, for watcher.await.
const (
	// An apply transaction is open: it has written (the ledger row is
	// locked and updated first), so it has a transaction id.
	inApply = `backend_xid IS NOT NULL`
	// A COPY into the staging table is running.
	inCopy = `state = 'active' AND query ILIKE 'copy%'`
)

// await polls until one of the primary's backends satisfies cond, for up
// to timeout; it reports whether one did.
func (w *watcher) await(cond string, timeout time.Duration) bool {
	q := `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND ` + cond + `)`
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var ok bool
		if err := w.c.QueryRow(context.Background(), q, w.d.app).Scan(&ok); err != nil {
			w.d.t.Fatalf("pg_stat_activity: %v", err)
		}
		if ok {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// backends is the number of the primary's connections to PostgreSQL.
func (w *watcher) backends() int {
	var n int
	if err := w.c.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, w.d.app).Scan(&n); err != nil {
		w.d.t.Fatalf("pg_stat_activity: %v", err)
	}
	return n
}

// ---------------------------------------------------------------------------
// The services.

type primaryNode struct {
	svc *primary.Service
	reg *prometheus.Registry
}

// startPrimary starts a primary in this process, stopped when t ends.
func startPrimary(t *testing.T, cfg primary.Config) *primaryNode {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.HTTPListen = "127.0.0.1:0"
	cfg.Logger = logger()
	reg := prometheus.NewRegistry()
	cfg.Registry = reg
	svc, err := primary.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	return &primaryNode{svc: svc, reg: reg}
}

// metric sums the series of the counter or gauge name whose labels include
// labels.
func metric(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

type edgeNode struct {
	id      string        // the ledger's edge id
	svc     *edge.Service // nil for an edge put together from its parts
	wal     *wal.Log
	shipper *edge.Shipper
	client  longhaulv1.IngestClient
}

// startEdge starts an edge in this process shipping to primaryAddr,
// stopped when t ends. mod adjusts its configuration.
func startEdge(t *testing.T, node, primaryAddr string, mod func(*edge.Config)) *edgeNode {
	t.Helper()
	cfg := edge.Config{
		Region: "eu", NodeID: node, DataDir: t.TempDir(), Primary: primaryAddr,
		Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Logger: logger(),
		Shipper: edge.ShipperConfig{MaxBatchAge: 50 * time.Millisecond, BackoffMin: 20 * time.Millisecond, BackoffMax: time.Second},
	}
	if mod != nil {
		mod(&cfg)
	}
	svc, err := edge.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	return &edgeNode{id: cfg.EdgeID(), svc: svc, wal: svc.WAL(), shipper: svc.Shipper(), client: dialIngest(t, svc.Addr())}
}

func dialIngest(t *testing.T, addr string) longhaulv1.IngestClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return longhaulv1.NewIngestClient(cc)
}

// drained tells whether the edge's WAL holds nothing the primary has not
// acknowledged.
func (e *edgeNode) drained() bool {
	st := e.wal.Stats()
	return st.Records == 0 && st.TruncatedSeq == st.LastSeq
}

// waitDrained waits until every edge's WAL is shipped and acknowledged; it
// returns how long that took. It fails t when that takes longer than bound
// plus a second per drainRate records of the backlog it started with (a
// machine loaded with other tests, under -race, ships a large backlog
// slowly; a stuck shipper ships nothing). With LONGHAUL_FAULTS_TRACE set it
// prints the shippers' state every second to stderr.
func waitDrained(t *testing.T, bound time.Duration, edges ...*edgeNode) time.Duration {
	t.Helper()
	const drainRate = 5000
	var backlog uint64
	for _, e := range edges {
		backlog += e.wal.Stats().Records
	}
	bound += time.Duration(backlog/drainRate) * time.Second
	trace := os.Getenv("LONGHAUL_FAULTS_TRACE") != ""
	start, traced := time.Now(), time.Time{}
	for {
		ok := true
		for _, e := range edges {
			ok = ok && e.drained()
		}
		if ok {
			return time.Since(start)
		}
		if trace && time.Since(traced) >= time.Second {
			traced = time.Now()
			for _, e := range edges {
				fmt.Fprintf(os.Stderr, "faults trace: %v draining %s: WAL %+v, shipper %+v\n",
					time.Since(start).Round(time.Millisecond), e.id, e.wal.Stats(), e.shipper.Stats())
			}
		}
		if time.Since(start) > bound {
			for _, e := range edges {
				t.Logf("%s: WAL %+v, shipper %+v", e.id, e.wal.Stats(), e.shipper.Stats())
			}
			dumpStacks(t)
			t.Fatalf("a backlog of %d records not shipped within %v", backlog, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dumpStacks writes every goroutine's stack to a file, for a test that
// found something stuck, and logs where.
func dumpStacks(t *testing.T) {
	t.Helper()
	buf := make([]byte, 16<<20)
	buf = buf[:runtime.Stack(buf, true)]
	f, err := os.CreateTemp("", "longhaul-faults-stacks-*.txt")
	if err != nil {
		t.Logf("goroutine dump: %v", err)
		return
	}
	defer f.Close()
	if _, err := f.Write(buf); err != nil {
		t.Logf("goroutine dump: %v", err)
		return
	}
	t.Logf("every goroutine's stack: %s", f.Name())
}

// waitFor polls cond every 10ms until it holds, failing t after bound; it
// returns how long it took.
func waitFor(t *testing.T, what string, bound time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			dumpStacks(t)
			t.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// waitResumed waits until the edge's shipper has a stream the primary
// welcomed after connects streams, and an acknowledged sequence beyond
// applied (or nothing left to ship): the shipper is not stuck. It returns
// how long that took.
func waitResumed(t *testing.T, e *edgeNode, connects, applied uint64) time.Duration {
	t.Helper()
	return waitFor(t, e.id+": shipper resumes", resumeBound, func() bool {
		st := e.shipper.Stats()
		return st.Connects > connects && (st.AppliedSeq > applied || e.drained())
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ---------------------------------------------------------------------------
// The book of what the edges acknowledged, and the probe that checks the
// tables against it.

// book records every insight an edge acknowledged, by edge and sequence
// number. Pushers hold mu for reading from before a push until its answer
// is recorded; a probe holds it for writing, so that when it reads the
// tables every record an edge has appended is in the book.
type book struct {
	mu sync.RWMutex
	// recs is guarded by recMu (pushers record concurrently, holding mu
	// for reading) and read under mu held for writing.
	recMu sync.Mutex
	recs  map[string][]*longhaulv1.BatchInsight // edge id -> record seq-1

	base  time.Time // observations fall in [base, base+1h)
	scans atomic.Int64

	acked, refused atomic.Int64 // insights
	pushes         atomic.Int64 // acknowledged pushes
	// refusedBy counts refused pushes by gRPC code.
	refusedMu sync.Mutex
	refusedBy map[codes.Code]int
	// refusedScans are the scan ids of refused pushes: none may arrive.
	refusedScans []string
}

func newBook() *book {
	return &book{recs: map[string][]*longhaulv1.BatchInsight{}, refusedBy: map[codes.Code]int{},
		base: time.Now().Add(-2 * time.Hour).Truncate(time.Microsecond)}
}

// batch makes the insights of one push: a scan of its own (so that the
// scans table counts its applications), n distinct keys out of keys, each
// observed at a random time within an hour, so that keys repeat across
// pushes and edges and last-writer-wins decides.
func (b *book) batch(rng *mrand.Rand, n, keys int) (string, []*longhaulv1.Insight) {
	scan := fmt.Sprintf("scan-%07d", b.scans.Add(1))
	start := rng.IntN(keys)
	ins := make([]*longhaulv1.Insight, n)
	for i := range ins {
		details, _ := structpb.NewStruct(map[string]any{"scan": scan, "i": float64(i), "pad": strings.Repeat("x", 120)})
		ins[i] = &longhaulv1.Insight{
			AccountId: "acme", Asset: "a.example", Kind: "fault", Subject: fmt.Sprintf("k%06d", (start+i)%keys),
			Severity: longhaulv1.Severity(1 + rng.IntN(4)), Details: details,
			ObservedAt: timestamppb.New(b.base.Add(time.Duration(rng.Int64N(int64(time.Hour))))),
			ScanId:     scan, Checker: "faults",
		}
	}
	return scan, ins
}

// push pushes ins to e and records them when acknowledged. It returns the
// push's error.
func (b *book) push(ctx context.Context, e *edgeNode, scan string, ins []*longhaulv1.Insight) error {
	stored, err := edge.ValidateInsights(time.Now(), edge.Limits{}, ins)
	if err != nil {
		return fmt.Errorf("the test made bad insights: %w", err)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := e.client.Push(ctx, &longhaulv1.PushRequest{Insights: ins})
	b.settle(e.id, scan, stored, resp, err)
	return err
}

// settle records the answer to a push of stored (under mu, for reading).
func (b *book) settle(edgeID, scan string, stored []*longhaulv1.BatchInsight, resp *longhaulv1.PushResponse, err error) {
	if err != nil {
		b.refused.Add(int64(len(stored)))
		b.refusedMu.Lock()
		b.refusedBy[status.Code(err)]++
		b.refusedScans = append(b.refusedScans, scan)
		b.refusedMu.Unlock()
		return
	}
	b.acked.Add(int64(len(stored)))
	b.pushes.Add(1)
	b.recMu.Lock()
	defer b.recMu.Unlock()
	recs := b.recs[edgeID]
	if need := int(resp.LastSeq); need > len(recs) {
		recs = append(recs, make([]*longhaulv1.BatchInsight, need-len(recs))...)
	}
	for i, in := range stored {
		recs[int(resp.FirstSeq)-1+i] = in
	}
	b.recs[edgeID] = recs
}

// last is the last sequence number edgeID acknowledged so far.
func (b *book) last(edgeID string) uint64 {
	b.recMu.Lock()
	defer b.recMu.Unlock()
	return uint64(len(b.recs[edgeID]))
}

// refusals returns the refused pushes by code, for the logs.
func (b *book) refusals() map[codes.Code]int {
	b.refusedMu.Lock()
	defer b.refusedMu.Unlock()
	m := make(map[codes.Code]int, len(b.refusedBy))
	for k, v := range b.refusedBy {
		m[k] = v
	}
	return m
}

// load is pushers pushing to edges until stopped.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

type loadConfig struct {
	pushers int           // per edge
	perPush int           // insights per push
	keys    int           // distinct keys
	pace    time.Duration // pause between a pusher's pushes
	// expect are the codes a push may be refused with (the fault's);
	// any other refusal fails the test.
	expect []codes.Code
	// backoff is the pause after a refused push. Default pace.
	backoff time.Duration
	// refused, when set, is called with every refusal.
	refused func(error)
}

func (b *book) start(t *testing.T, cfg loadConfig, edges ...*edgeNode) *load {
	t.Helper()
	l := &load{stop: make(chan struct{})}
	if cfg.backoff == 0 {
		cfg.backoff = cfg.pace
	}
	for ei, e := range edges {
		for p := range cfg.pushers {
			rng := mrand.New(mrand.NewPCG(uint64(ei), uint64(p)))
			l.wg.Go(func() {
				for {
					select {
					case <-l.stop:
						return
					default:
					}
					scan, ins := b.batch(rng, cfg.perPush, cfg.keys)
					err := b.push(context.Background(), e, scan, ins)
					wait := cfg.pace
					if err != nil {
						wait = cfg.backoff
						if cfg.refused != nil {
							cfg.refused(err)
						}
						if !slices.Contains(cfg.expect, status.Code(err)) {
							t.Errorf("%s: push refused: %v", e.id, err)
						}
					}
					select {
					case <-l.stop:
						return
					case <-time.After(wait):
					}
				}
			})
		}
	}
	t.Cleanup(l.Stop)
	return l
}

// Stop stops the pushers and waits for their last pushes. Safe to call
// twice.
func (l *load) Stop() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// row is a row of the insights table as the probe compares it.
type row struct {
	Severity, ScanID, Checker string
	Details                   any
	FirstSeen, LastSeen       time.Time
	Resolved                  bool
}

// snapshot is the primary's tables at one moment.
type snapshot struct {
	applied map[string]uint64 // edge id -> applied_seq
	batches map[string]int64  // edge id -> batches applied
	tallies map[string]int64  // scan id -> applied_count
	rows    map[string]row    // key -> row
	dead    int64
}

// read reads the tables in one REPEATABLE READ snapshot.
func (d *db) read() snapshot {
	d.t.Helper()
	s, err := d.tryRead()
	if err != nil {
		d.t.Fatalf("read the tables: %v", err)
	}
	return s
}

// tryRead is read returning its error: for callers that must not stop the
// test while they hold a lock.
func (d *db) tryRead() (snapshot, error) {
	var s snapshot
	err := d.conn(func(ctx context.Context, c *pgx.Conn) error {
		s = snapshot{applied: map[string]uint64{}, batches: map[string]int64{}, tallies: map[string]int64{}, rows: map[string]row{}}
		tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx) //nolint:errcheck // read only
		rs, err := tx.Query(ctx, `SELECT edge_id, applied_seq, batches FROM edge_ledger`)
		if err != nil {
			return err
		}
		for rs.Next() {
			var id string
			var seq, n int64
			if err := rs.Scan(&id, &seq, &n); err != nil {
				return err
			}
			s.applied[id], s.batches[id] = uint64(seq), n
		}
		if err := rs.Err(); err != nil {
			return err
		}
		rs, err = tx.Query(ctx, `SELECT scan_id, applied_count FROM scans`)
		if err != nil {
			return err
		}
		for rs.Next() {
			var id string
			var n int64
			if err := rs.Scan(&id, &n); err != nil {
				return err
			}
			s.tallies[id] = n
		}
		if err := rs.Err(); err != nil {
			return err
		}
		rs, err = tx.Query(ctx, `SELECT account_id, asset, kind, subject, severity, details::text, scan_id, checker,
			first_seen_at, last_seen_at, resolved_at IS NOT NULL FROM insights`)
		if err != nil {
			return err
		}
		for rs.Next() {
			var a, as, k, sub, details string
			var r row
			if err := rs.Scan(&a, &as, &k, &sub, &r.Severity, &details, &r.ScanID, &r.Checker, &r.FirstSeen, &r.LastSeen, &r.Resolved); err != nil {
				return err
			}
			if err := json.Unmarshal([]byte(details), &r.Details); err != nil {
				return err
			}
			r.FirstSeen, r.LastSeen = r.FirstSeen.UTC(), r.LastSeen.UTC()
			s.rows[a+"/"+as+"/"+k+"/"+sub] = r
		}
		if err := rs.Err(); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM dead_letters`).Scan(&s.dead)
	})
	return s, err
}

// probeResult is what a probe checked.
type probeResult struct {
	records int // acknowledged records covered by the ledgers
	rows    int // insight rows compared
	batches int64
}

// probe checks that the primary's tables are exactly the effect of each
// edge's records up to the edge's ledger: the ledger covers only records
// the edge acknowledged, each scan is counted once per insight of it in
// that prefix (no batch applied twice, none in part), and the insights
// table is the last-writer-wins of the prefix, row for row. With all, the
// ledgers must cover every acknowledged record.
func (b *book) probe(t *testing.T, d *db, all bool, edges ...string) probeResult {
	t.Helper()
	s, prefixes, refused, err := b.freeze(d, all, edges)
	if err != nil {
		t.Fatal(err)
	}

	var res probeResult
	wantTallies := map[string]int64{}
	var union []*longhaulv1.BatchInsight
	for id, p := range prefixes {
		for i, in := range p {
			if in == nil {
				t.Fatalf("%s: record %d is under the ledger but no push acknowledged it", id, i+1)
			}
			wantTallies[in.ScanId]++
		}
		union = append(union, p...)
		res.records += len(p)
		res.batches += s.batches[id]
	}
	bad := 0
	report := func(format string, args ...any) {
		if bad++; bad <= 8 {
			t.Errorf(format, args...)
		}
	}
	for scan, n := range wantTallies {
		if got := s.tallies[scan]; got != n {
			report("scan %s: applied_count %d, want %d (each of its insights applied once)", scan, got, n)
		}
	}
	for scan, n := range s.tallies {
		if _, ok := wantTallies[scan]; !ok {
			report("scan %s: applied_count %d, but none of its insights is under a ledger", scan, n)
		}
	}
	for _, scan := range refused {
		if n, ok := s.tallies[scan]; ok {
			report("scan %s was refused, yet %d of its insights arrived", scan, n)
		}
	}
	want := map[string]row{}
	for _, w := range coalesce.Collapse(union).Winners {
		var details any
		if err := json.Unmarshal(w.In.Details, &details); err != nil {
			t.Fatal(err)
		}
		want[w.In.AccountId+"/"+w.In.Asset+"/"+w.In.Kind+"/"+w.In.Subject] = row{
			Severity: w.Severity, ScanID: w.In.ScanId, Checker: w.In.Checker, Details: details,
			FirstSeen: time.UnixMicro(w.FirstSeen).UTC(), LastSeen: time.UnixMicro(w.In.ObservedAtUnixMicros).UTC(),
		}
	}
	if len(s.rows) != len(want) {
		report("insights table has %d rows, the ledgers' prefixes make %d", len(s.rows), len(want))
	}
	for k, w := range want {
		if g, ok := s.rows[k]; !ok || !reflect.DeepEqual(g, w) {
			report("insight %s:\n got %+v\nwant %+v (last writer wins of the acknowledged prefix)", k, g, w)
		}
	}
	if s.dead != 0 {
		report("%d dead letters, want none", s.dead)
	}
	res.rows = len(s.rows)
	if bad > 0 {
		t.FailNow()
	}
	return res
}

// freeze reads the tables while no push is under way, and returns them with
// each edge's records up to its ledger and the scans refused so far.
func (b *book) freeze(d *db, all bool, edges []string) (snapshot, map[string][]*longhaulv1.BatchInsight, []string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, err := d.tryRead()
	if err != nil {
		return s, nil, nil, fmt.Errorf("read the tables: %w", err)
	}
	prefixes := map[string][]*longhaulv1.BatchInsight{}
	for _, id := range edges {
		recs := b.recs[id]
		a := s.applied[id]
		if a > uint64(len(recs)) {
			return s, nil, nil, fmt.Errorf("%s: ledger at %d, beyond the %d records the edge acknowledged", id, a, len(recs))
		}
		if all && a != uint64(len(recs)) {
			return s, nil, nil, fmt.Errorf("%s: ledger at %d, want every one of the %d acknowledged records", id, a, len(recs))
		}
		prefixes[id] = recs[:a]
	}
	return s, prefixes, append([]string(nil), b.refusedScans...), nil
}

// ids returns the edges' ids.
func ids(edges ...*edgeNode) []string {
	out := make([]string, len(edges))
	for i, e := range edges {
		out[i] = e.id
	}
	return out
}

// maxDur is the longest of ds.
func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// round formats d for the "faults:" lines.
func round(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
