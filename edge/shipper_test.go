package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/coalesce"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/wan"
	"github.com/longhaul/longhaul/primary"
	"github.com/longhaul/longhaul/primary/migrate"
	"github.com/longhaul/longhaul/wal"
)

// shipBase is the time test insights are observed around.
var shipBase = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func shipAt(sec int) int64 { return shipBase.Add(time.Duration(sec) * time.Second).UnixMicro() }

// shipInsight is an insight of account "acme", checker "tls", on asset.
func shipInsight(asset, subject string, sec int, scan string) *longhaulv1.BatchInsight {
	return &longhaulv1.BatchInsight{
		AccountId: "acme", Asset: asset, Kind: "tls.expiry", Subject: subject,
		Severity: longhaulv1.Severity_HIGH, Details: fmt.Appendf(nil, `{"scan": %q, "sec": %d}`, scan, sec),
		ObservedAtUnixMicros: shipAt(sec), ScanId: scan, Checker: "tls",
	}
}

// shipEnv is a test's WAL, database and the processes around them.
type shipEnv struct {
	t    *testing.T
	ctx  context.Context
	url  string
	pool *pgxpool.Pool
	log  *wal.Log
	// sent is every insight appended, for the expected table.
	sent []*longhaulv1.BatchInsight
}

func shipSetup(t *testing.T) *shipEnv {
	t.Helper()
	e := &shipEnv{t: t, ctx: context.Background(), url: pgtest.URL(t)}
	var err error
	if e.pool, err = pgxpool.New(e.ctx, e.url); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.pool.Close)
	if e.log, err = wal.Open(e.ctx, t.TempDir(), wal.Options{Logger: shipQuiet}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.log.Close(); err != nil {
			t.Error(err)
		}
	})
	return e
}

var shipQuiet = slog.New(slog.DiscardHandler)

// startPrimary starts a primary on the test's database, listening on addr
// ("" for any port), and stops it when the test ends.
func (e *shipEnv) startPrimary(addr string) *primary.Service {
	e.t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	svc, err := primary.Start(e.ctx, primary.Config{DatabaseURL: e.url, Listen: addr, HTTPListen: "127.0.0.1:0", Logger: shipQuiet})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	return svc
}

// run starts a shipper and returns it with a function that stops it and
// checks that Run returned nil promptly; the test's end calls it too.
func (e *shipEnv) run(cfg ShipperConfig) (*Shipper, func()) {
	e.t.Helper()
	if cfg.EdgeID == "" {
		cfg.EdgeID = "edge-test"
	}
	if cfg.Logger == nil {
		cfg.Logger = shipQuiet
	}
	s, err := NewShipper(e.log, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Run returned %v after cancel, want nil", err)
				}
			case <-time.After(5 * time.Second):
				e.t.Fatal("Run did not return within 5s of its context's end")
			}
		})
	}
	e.t.Cleanup(stop)
	return s, stop
}

func (e *shipEnv) append(payloads ...[]byte) uint64 {
	e.t.Helper()
	_, last, err := e.log.Append(e.ctx, payloads)
	if err != nil {
		e.t.Fatal(err)
	}
	return last
}

func (e *shipEnv) appendInsights(ins ...*longhaulv1.BatchInsight) uint64 {
	e.t.Helper()
	payloads, err := shipEncode(ins)
	if err != nil {
		e.t.Fatal(err)
	}
	e.sent = append(e.sent, ins...)
	return e.append(payloads...)
}

func shipEncode(ins []*longhaulv1.BatchInsight) ([][]byte, error) {
	payloads := make([][]byte, len(ins))
	for i, in := range ins {
		p, err := EncodeInsight(in)
		if err != nil {
			return nil, err
		}
		payloads[i] = p
	}
	return payloads, nil
}

func (e *shipEnv) appendCompletion(c *longhaulv1.ScanCompletion) uint64 {
	e.t.Helper()
	p, err := EncodeCompletion(c)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.append(p)
}

// ledger returns the edge's row of the primary's ledger.
func (e *shipEnv) ledger(edge string) (applied, batches int64) {
	e.t.Helper()
	err := e.pool.QueryRow(e.ctx, `SELECT coalesce(max(applied_seq), 0), coalesce(max(batches), 0) FROM edge_ledger WHERE edge_id = $1`, edge).
		Scan(&applied, &batches)
	if err != nil {
		e.t.Fatal(err)
	}
	return applied, batches
}

// waitShipped waits until the primary has applied everything up to last
// and the edge has truncated its WAL to it.
func (e *shipEnv) waitShipped(edge string, last uint64, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		applied, _ := e.ledger(edge)
		st := e.log.Stats()
		if uint64(applied) == last && st.TruncatedSeq == last {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("after %v: ledger at %d, WAL truncated to %d; want both at %d", timeout, applied, st.TruncatedSeq, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shipRow is a row of the insights table as the tests compare it.
type shipRow struct {
	Severity, ScanID, Checker string
	Details                   any
	FirstSeen, LastSeen       time.Time
}

// checkTable checks that the insights table holds what last-writer-wins
// makes of every insight appended, once each.
func (e *shipEnv) checkTable() {
	e.t.Helper()
	want := map[string]shipRow{}
	for _, w := range coalesce.Collapse(append([]*longhaulv1.BatchInsight(nil), e.sent...)).Winners {
		var details any
		if err := json.Unmarshal(w.In.Details, &details); err != nil {
			e.t.Fatal(err)
		}
		want[strings.Join([]string{w.In.AccountId, w.In.Asset, w.In.Kind, w.In.Subject}, "/")] = shipRow{
			Severity: w.Severity, ScanID: w.In.ScanId, Checker: w.In.Checker, Details: details,
			FirstSeen: time.UnixMicro(w.FirstSeen).UTC(), LastSeen: time.UnixMicro(w.In.ObservedAtUnixMicros).UTC(),
		}
	}
	rows, err := e.pool.Query(e.ctx, `SELECT account_id, asset, kind, subject, severity, details::text, scan_id, checker,
		first_seen_at, last_seen_at FROM insights`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]shipRow{}
	for rows.Next() {
		var a, as, k, s, details string
		var r shipRow
		if err := rows.Scan(&a, &as, &k, &s, &r.Severity, &details, &r.ScanID, &r.Checker, &r.FirstSeen, &r.LastSeen); err != nil {
			e.t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(details), &r.Details); err != nil {
			e.t.Fatal(err)
		}
		r.FirstSeen, r.LastSeen = r.FirstSeen.UTC(), r.LastSeen.UTC()
		got[strings.Join([]string{a, as, k, s}, "/")] = r
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	if len(got) != len(want) {
		e.t.Errorf("insights table has %d rows, want %d", len(got), len(want))
	}
	bad := 0
	for k, w := range want {
		if g, ok := got[k]; !ok || !reflect.DeepEqual(g, w) {
			if bad++; bad <= 5 {
				e.t.Errorf("insight %s:\n got %+v\nwant %+v", k, g, w)
			}
		}
	}
	var dead int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM dead_letters`).Scan(&dead); err != nil {
		e.t.Fatal(err)
	}
	if dead != 0 {
		e.t.Errorf("%d dead letters, want none", dead)
	}
}

// freeAddr returns a loopback address nothing listens on (for now).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func shipWaitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestShipperDeliversEverything(t *testing.T) {
	t.Parallel()
	e := shipSetup(t)
	svc := e.startPrimary("")

	// An insight of an older scan, which scan-a's completion resolves.
	e.appendInsights(shipInsight("a.example", "old", 0, "scan-old"))
	// scan-a sees ten keys twice each; scan-b sees three of them later,
	// so its observations win and scan-a's are coalesced away: only
	// exact tallies let scan-a complete.
	var ins []*longhaulv1.BatchInsight
	for round := range 2 {
		for i := range 10 {
			ins = append(ins, shipInsight("a.example", fmt.Sprint("port-", i), 100+100*round+i, "scan-a"))
		}
	}
	for i := range 3 {
		ins = append(ins, shipInsight("a.example", fmt.Sprint("port-", i), 300+i, "scan-b"))
	}
	e.appendInsights(ins...)
	e.appendCompletion(&longhaulv1.ScanCompletion{ScanId: "scan-a", AccountId: "acme", Asset: "a.example", Checker: "tls",
		InsightCount: 10, StartedAt: timestamppb.New(shipBase.Add(50 * time.Second))})

	reg := prometheus.NewRegistry()
	s, _ := e.run(ShipperConfig{Primary: svc.Addr(), Region: "eu", Registerer: reg})
	last := e.log.Stats().LastSeq
	e.waitShipped("edge-test", last, 30*time.Second)

	// Records appended while the shipper runs go out within MaxBatchAge.
	more := []*longhaulv1.BatchInsight{shipInsight("b.example", "443", 400, "scan-c"), shipInsight("b.example", "443", 401, "scan-c")}
	for _, in := range more {
		last = e.appendInsights(in)
	}
	e.waitShipped("edge-test", last, 30*time.Second)
	e.checkTable()

	var resolvedAt *time.Time
	if err := e.pool.QueryRow(e.ctx, `SELECT resolved_at FROM insights WHERE subject = 'old'`).Scan(&resolvedAt); err != nil {
		t.Fatal(err)
	}
	if want := shipBase.Add(50 * time.Second); resolvedAt == nil || !resolvedAt.Equal(want) {
		t.Errorf("old insight resolved_at = %v, want %v (scan-a's start)", resolvedAt, want)
	}
	var applied, count int64
	var scanResolved *time.Time
	if err := e.pool.QueryRow(e.ctx, `SELECT applied_count, insight_count, resolved_at FROM scans WHERE scan_id = 'scan-a'`).
		Scan(&applied, &count, &scanResolved); err != nil {
		t.Fatal(err)
	}
	if applied != 10 || count != 10 || scanResolved == nil {
		t.Errorf("scan-a: applied_count %d, insight_count %d, resolved_at %v; want 10, 10, set", applied, count, scanResolved)
	}

	st := s.Stats()
	if st.Coalesced == 0 || st.InsightsIn != uint64(len(e.sent)) || st.InsightsIn-st.InsightsOut != st.Coalesced {
		t.Errorf("stats: insights in %d, out %d, coalesced %d; want in %d and some coalesced", st.InsightsIn, st.InsightsOut, st.Coalesced, len(e.sent))
	}
	if st.RecordsApplied != last || st.Completions != 1 || st.BadRecords != 0 || st.Duplicates != 0 || !st.Connected || st.AppliedSeq != last {
		t.Errorf("stats = %+v", st)
	}
	if st.WireBytes == 0 || st.WireBytes >= st.PayloadBytes {
		t.Errorf("wire bytes %d, payload bytes %d: want compression to save some", st.WireBytes, st.PayloadBytes)
	}
	if got := testutil.ToFloat64(s.m.coalesced); got != float64(st.Coalesced) {
		t.Errorf("longhaul_edge_ship_insights_coalesced_total = %v, want %d", got, st.Coalesced)
	}
	if got := testutil.ToFloat64(s.m.acks.WithLabelValues("applied")); got != float64(st.Applied) {
		t.Errorf("acks{applied} = %v, want %d", got, st.Applied)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n < len(s.m.all) {
		t.Errorf("gathered %d metrics (err %v), want every shipper metric", n, err)
	}
	if got := e.log.Stats().Records; got != 0 {
		t.Errorf("backlog records = %v, want 0", got)
	}
}

func TestShipperKeepsSeveralBatchesInFlight(t *testing.T) {
	t.Parallel()
	e := shipSetup(t)
	svc := e.startPrimary("")
	link := wan.New(t, svc.Addr())
	link.SetRTT(40 * time.Millisecond)

	const n, per = 400, 10
	var ins []*longhaulv1.BatchInsight
	for i := range n {
		ins = append(ins, shipInsight("a.example", fmt.Sprint(i), i, "scan-a"))
	}
	last := e.appendInsights(ins...)
	s, _ := e.run(ShipperConfig{Primary: link.Addr(), MaxBatchRecords: per, MaxInFlight: 8})
	e.waitShipped("edge-test", last, 30*time.Second)
	e.checkTable()

	_, batches := e.ledger("edge-test")
	st := s.Stats()
	if batches != n/per || st.Applied != n/per || st.BatchesSent != n/per || st.Duplicates != 0 {
		t.Errorf("ledger batches %d, stats %+v; want %d batches, each sent and applied once", batches, st, n/per)
	}
	if st.PeakInFlight < 2 || st.PeakInFlight > 8 {
		t.Errorf("peak in flight %d, want several and at most 8", st.PeakInFlight)
	}
}

func TestShipperWaitsForThePrimary(t *testing.T) {
	t.Parallel()
	e := shipSetup(t)
	addr := freeAddr(t)
	s, _ := e.run(ShipperConfig{Primary: addr, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, MaxBatchRecords: 25})

	shipSome := func(first int) uint64 {
		var last uint64
		for g := range 4 {
			var ins []*longhaulv1.BatchInsight
			for i := range 30 {
				ins = append(ins, shipInsight("a.example", fmt.Sprint(i), first+g*100+i, fmt.Sprint("scan-", first+g)))
			}
			last = e.appendInsights(ins...)
		}
		return last
	}

	// Nobody listens yet.
	last := shipSome(0)
	shipWaitFor(t, "reconnection attempts", 10*time.Second, func() bool { return s.Stats().Reconnects >= 3 })
	svc := e.startPrimary(addr)
	e.waitShipped("edge-test", last, 30*time.Second)

	// The primary goes away mid-way, and a new one comes up on the same
	// database.
	if err := svc.Stop(e.ctx); err != nil {
		t.Fatal(err)
	}
	before := s.Stats().Reconnects
	last = shipSome(1000)
	shipWaitFor(t, "reconnection attempts", 10*time.Second, func() bool { return s.Stats().Reconnects >= before+2 })
	e.startPrimary(addr)
	e.waitShipped("edge-test", last, 30*time.Second)
	e.checkTable()

	_, batches := e.ledger("edge-test")
	st := s.Stats()
	if uint64(batches) != st.Applied || st.Duplicates != 0 || st.Connects < 2 {
		t.Errorf("ledger batches %d; stats %+v: want each batch applied once, on two streams or more", batches, st)
	}
}

func TestShipperThroughWANFaults(t *testing.T) {
	t.Parallel()
	e := shipSetup(t)
	svc := e.startPrimary("")
	link := wan.New(t, svc.Addr())
	link.SetRTT(30 * time.Millisecond)
	s, _ := e.run(ShipperConfig{Primary: link.Addr(), BackoffMin: 20 * time.Millisecond, BackoffMax: 300 * time.Millisecond,
		MaxBatchRecords: 40, MaxBatchAge: 20 * time.Millisecond})

	// A checker pushes all along: 200 groups of 10 observations of 60
	// keys, so keys repeat within and across batches.
	appendErr := make(chan error, 1)
	go func() {
		var err error
		defer func() { appendErr <- err }()
		for g := range 200 {
			ins := make([]*longhaulv1.BatchInsight, 10)
			for i := range ins {
				ins[i] = shipInsight("a.example", fmt.Sprint((g*7+i)%60), g*10+i, fmt.Sprint("scan-", g/20))
			}
			var payloads [][]byte
			if payloads, err = shipEncode(ins); err != nil {
				return
			}
			if _, _, err = e.log.Append(e.ctx, payloads); err != nil {
				return
			}
			e.sent = append(e.sent, ins...) // read once appendErr is received
			time.Sleep(15 * time.Millisecond)
		}
	}()

	step := func(what string, f func(), d time.Duration) {
		t.Logf("%s for %v (applied %d)", what, d, s.Stats().AppliedSeq)
		f()
		time.Sleep(d)
	}
	step("run", func() {}, 300*time.Millisecond)
	step("blackhole", link.Blackhole, 2*time.Second)
	step("heal", link.Heal, 300*time.Millisecond)
	step("reset", link.ResetPeer, 300*time.Millisecond)
	step("link down", link.Disable, 500*time.Millisecond)
	step("link up", link.Enable, 0)
	if err := <-appendErr; err != nil {
		t.Fatal(err)
	}
	e.waitShipped("edge-test", e.log.Stats().LastSeq, 60*time.Second)
	e.checkTable()
	if st := s.Stats(); st.Reconnects < 3 || st.Coalesced == 0 {
		t.Errorf("stats %+v: want at least 3 reconnects and some coalescing", st)
	}
	t.Logf("stats: %+v", s.Stats())
}

func TestShipperSkipsRecordsThatDoNotDecode(t *testing.T) {
	t.Parallel()
	e := shipSetup(t)
	svc := e.startPrimary("")
	e.appendInsights(shipInsight("a.example", "1", 1, "scan-a"))
	e.append([]byte("not a protobuf \xff\xfe"), []byte{0x08, 0x01}) // garbage; a valid message of neither kind
	e.appendInsights(shipInsight("a.example", "2", 2, "scan-a"))
	e.append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	last := e.appendInsights(shipInsight("a.example", "3", 3, "scan-a"))

	s, _ := e.run(ShipperConfig{Primary: svc.Addr(), MaxBatchRecords: 3})
	e.waitShipped("edge-test", last, 30*time.Second)
	e.checkTable()
	if st := s.Stats(); st.BadRecords != 3 || st.RecordsApplied != last || st.InsightsIn != 3 {
		t.Errorf("stats %+v: want 3 bad records skipped, %d records applied, 3 insights", st, last)
	}
	if got := testutil.ToFloat64(s.m.badRecords); got != 3 {
		t.Errorf("longhaul_edge_ship_bad_records_total = %v, want 3", got)
	}
}

func TestShipperResumesAfterOutOfSequence(t *testing.T) {
	t.Parallel()
	e := shipSetup(t)
	svc := e.startPrimary("")
	last := e.appendInsights(shipInsight("a.example", "1", 1, "scan-a"), shipInsight("a.example", "2", 2, "scan-a"))
	s, _ := e.run(ShipperConfig{Primary: svc.Addr(), BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	e.waitShipped("edge-test", last, 30*time.Second)

	// Someone else moves the ledger on (as a second edge with the same id
	// would): the next batch no longer follows it.
	if _, err := e.pool.Exec(e.ctx, `UPDATE edge_ledger SET applied_seq = applied_seq + 2 WHERE edge_id = 'edge-test'`); err != nil {
		t.Fatal(err)
	}
	var ins []*longhaulv1.BatchInsight
	for i := range 5 {
		ins = append(ins, shipInsight("b.example", fmt.Sprint(i), 10+i, "scan-b"))
	}
	last = e.appendInsights(ins...)
	e.waitShipped("edge-test", last, 30*time.Second)
	st := s.Stats()
	if st.OutOfSequence != 1 || st.Connects != 2 {
		t.Errorf("stats %+v: want one OUT_OF_SEQUENCE, then a new stream", st)
	}
	var n int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM insights WHERE asset = 'b.example'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3 { // the first two were skipped by moving the ledger
		t.Errorf("%d insights of b.example, want 3", n)
	}
}

func TestShipperStopsWhenTheLedgerIsAhead(t *testing.T) {
	t.Parallel()
	e := shipSetup(t)
	svc := e.startPrimary("")
	// The edge id shipped 1000 records from a disk that is gone.
	if _, err := e.pool.Exec(e.ctx, `INSERT INTO edge_ledger (edge_id, applied_seq) VALUES ('edge-test', 1000)`); err != nil {
		t.Fatal(err)
	}
	e.appendInsights(shipInsight("a.example", "1", 1, "scan-a"), shipInsight("a.example", "2", 2, "scan-a"))
	s, err := NewShipper(e.log, ShipperConfig{EdgeID: "edge-test", Primary: svc.Addr(), Logger: shipQuiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	if err := s.Run(ctx); !errors.Is(err, ErrLedgerMismatch) {
		t.Fatalf("Run = %v, want ErrLedgerMismatch", err)
	}
	if st := e.log.Stats(); st.Records != 2 || st.TruncatedSeq != 0 {
		t.Errorf("WAL %+v: want it untouched", st)
	}
	if st := s.Stats(); !st.LedgerMismatch || st.BatchesSent != 0 {
		t.Errorf("stats %+v: want the mismatch flagged and nothing sent", st)
	}
	if got := testutil.ToFloat64(s.m.ledgerMismatch); got != 1 {
		t.Errorf("ledger_mismatch gauge = %v, want 1", got)
	}
}

func TestShipperRunReturnsPromptly(t *testing.T) {
	t.Parallel()
	e := shipSetup(t)
	svc := e.startPrimary("")
	link := wan.New(t, svc.Addr())
	e.appendInsights(shipInsight("a.example", "1", 1, "scan-a"))

	stopIn := func(what string, s *Shipper, stop func(), ready func(ShipperStats) bool) {
		t.Helper()
		shipWaitFor(t, what, 10*time.Second, func() bool { return ready(s.Stats()) })
		start := time.Now()
		stop()
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: Run took %v to return", what, d)
		}
	}
	// Connected and idle, waiting for records.
	s, stop := e.run(ShipperConfig{Primary: link.Addr()})
	stopIn("idle stream", s, stop, func(st ShipperStats) bool { return st.Connected && st.AppliedSeq == 1 })
	// Waiting out a long backoff.
	s, stop = e.run(ShipperConfig{Primary: freeAddr(t), BackoffMin: time.Minute, BackoffMax: time.Minute})
	stopIn("backoff", s, stop, func(st ShipperStats) bool { return st.Reconnects == 1 })
	// A stream stuck in a blackhole, with a batch in flight.
	s, stop = e.run(ShipperConfig{Primary: link.Addr()})
	shipWaitFor(t, "connection", 10*time.Second, func() bool { return s.Stats().Connected })
	link.Blackhole()
	e.appendInsights(shipInsight("a.example", "2", 2, "scan-a"))
	stopIn("blackhole", s, stop, func(st ShipperStats) bool { return st.InFlight == 1 })
	link.Heal()
}

func TestShipperConfig(t *testing.T) {
	t.Parallel()
	log, err := wal.Open(context.Background(), t.TempDir(), wal.Options{Logger: shipQuiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() })

	s, err := NewShipper(log, ShipperConfig{EdgeID: "e", Primary: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if c := s.cfg; c.MaxBatchBytes != 4<<20 || c.MaxBatchRecords != 100_000 || c.MaxBatchAge != 250*time.Millisecond ||
		c.MaxInFlight != 8 || c.BackoffMin != 100*time.Millisecond || c.BackoffMax != 10*time.Second || c.ConnectTimeout != 10*time.Second ||
		c.Compression != CompressionZstd {
		t.Errorf("defaults: %+v", c)
	}
	for i := range 40 {
		d := s.backoff(i)
		lo := min(100*time.Millisecond<<min(i, 20), 10*time.Second) / 2
		if d < lo || d > 2*lo {
			t.Errorf("backoff(%d) = %v, want within [%v, %v]", i, d, lo, 2*lo)
		}
	}

	for _, tc := range []struct {
		name string
		cfg  ShipperConfig
		want string
	}{
		{"no edge id", ShipperConfig{Primary: "p:1"}, "EdgeID is required"},
		{"no primary", ShipperConfig{EdgeID: "e"}, "Primary address is required"},
		{"batch bytes", ShipperConfig{EdgeID: "e", Primary: "p:1", MaxBatchBytes: -1}, "MaxBatchBytes"},
		{"huge batch", ShipperConfig{EdgeID: "e", Primary: "p:1", MaxBatchBytes: 1 << 30}, "MaxBatchBytes"},
		{"batch records", ShipperConfig{EdgeID: "e", Primary: "p:1", MaxBatchRecords: -5}, "MaxBatchRecords"},
		{"batch age", ShipperConfig{EdgeID: "e", Primary: "p:1", MaxBatchAge: -time.Second}, "MaxBatchAge"},
		{"in flight", ShipperConfig{EdgeID: "e", Primary: "p:1", MaxInFlight: -1}, "MaxInFlight"},
		{"backoff", ShipperConfig{EdgeID: "e", Primary: "p:1", BackoffMin: time.Minute, BackoffMax: time.Second}, "backoff"},
		{"compression", ShipperConfig{EdgeID: "e", Primary: "p:1", Compression: "lz4"}, `Compression "lz4" is not one of zstd, gzip, none`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewShipper(log, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewShipper = %v, want an error about %s", err, tc.want)
			}
		})
	}
	if _, err := NewShipper(nil, ShipperConfig{EdgeID: "e", Primary: "p:1"}); err == nil {
		t.Error("NewShipper(nil WAL) did not fail")
	}
	reg := prometheus.NewRegistry()
	if _, err := NewShipper(log, ShipperConfig{EdgeID: "e", Primary: "p:1", Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewShipper(log, ShipperConfig{EdgeID: "e", Primary: "p:1", Registerer: reg}); err == nil {
		t.Error("registering the metrics twice did not fail")
	}
}

// TestShipperEndsAStreamThatStalls: the primary is alive and welcomes the
// stream, but its apply waits on a row lock someone else holds, so nothing
// is acknowledged. Pass: the shipper ends the stream after StallTimeout,
// says where its sender and receiver were, reconnects, and once the lock
// goes everything arrives once; an edge idle for longer than StallTimeout
// is not taken for stalled when records come.
func TestShipperEndsAStreamThatStalls(t *testing.T) {
	t.Parallel()
	e := shipSetup(t)
	svc := e.startPrimary("")
	const stall = 600 * time.Millisecond
	s, _ := e.run(ShipperConfig{Primary: svc.Addr(), StallTimeout: stall, MaxBatchAge: time.Millisecond,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	last := e.appendInsights(shipInsight("a.example", "1", 1, "scan-a"))
	e.waitShipped("edge-test", last, 30*time.Second)

	// Idle for longer than the stall timeout, then a record: not a stall.
	time.Sleep(3 * stall)
	last = e.appendInsights(shipInsight("a.example", "2", 2, "scan-a"))
	e.waitShipped("edge-test", last, 30*time.Second)
	if st := s.Stats(); st.Stalls != 0 || st.Connects != 1 {
		t.Fatalf("stats %+v: an idle edge was taken for stalled", st)
	}

	// Someone holds the edge's ledger row: the primary's apply waits.
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(e.ctx) }()
	if _, err := tx.Exec(e.ctx, `SELECT * FROM edge_ledger WHERE edge_id = 'edge-test' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	last = e.appendInsights(shipInsight("a.example", "3", 3, "scan-a"), shipInsight("b.example", "1", 4, "scan-b"))
	// Run records why the stream ended once the session has returned.
	var st ShipperStats
	shipWaitFor(t, "a stalled stream ended", 30*time.Second, func() bool {
		st = s.Stats()
		return st.Stalls >= 1 && strings.Contains(st.LastError, "stalled")
	})
	for _, want := range []string{"stalled", "sender: ", "receiver: recv"} {
		if !strings.Contains(st.LastError, want) {
			t.Errorf("last error %q: want it to say %q", st.LastError, want)
		}
	}
	if err := tx.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.waitShipped("edge-test", last, 30*time.Second)
	e.checkTable()
	if st := s.Stats(); st.Connects < 2 || st.Sender == "" || st.Receiver == "" {
		t.Errorf("stats %+v: want a new stream after the stall, with its sender's and receiver's phases", st)
	}
}

// TestShipperCompressions ships the same records with each compression to
// a real primary: all arrive, and the compressed ones put fewer bytes on
// the wire than they encode.
func TestShipperCompressions(t *testing.T) {
	t.Parallel()
	for _, c := range []string{CompressionZstd, CompressionGzip, CompressionNone} {
		t.Run(c, func(t *testing.T) {
			t.Parallel()
			e := shipSetup(t)
			svc := e.startPrimary("")
			var ins []*longhaulv1.BatchInsight
			for i := range 2000 {
				ins = append(ins, shipInsight(fmt.Sprintf("host-%d.example", i/20), fmt.Sprint("port-", i%20), i, "scan-a"))
			}
			last := e.appendInsights(ins...)
			s, _ := e.run(ShipperConfig{Primary: svc.Addr(), Compression: c})
			e.waitShipped("edge-test", last, 30*time.Second)
			e.checkTable()
			st := s.Stats()
			if st.Compression != c {
				t.Errorf("stats say compression %q, want %q", st.Compression, c)
			}
			if squeezed := st.WireBytes < st.PayloadBytes/2; squeezed != (c != CompressionNone) {
				t.Errorf("%s: %d payload bytes went out as %d on the wire", c, st.PayloadBytes, st.WireBytes)
			}
		})
	}
}

// TestShipperFallsBackToGzip: a primary older than zstd shipping (a
// process built without the zstd compressor, whose gRPC refuses the
// stream as UNIMPLEMENTED) gets gzip, and everything arrives. When that
// primary is replaced by one that decodes zstd (an upgrade), the next
// stream is zstd again.
func TestShipperFallsBackToGzip(t *testing.T) {
	t.Parallel()
	e := shipSetup(t)
	bin := filepath.Join(t.TempDir(), "gzipprimary")
	if out, err := exec.Command("go", "build", "-o", bin, "./internal/gzipprimary").CombinedOutput(); err != nil {
		t.Fatalf("go build ./internal/gzipprimary: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading gzipprimary's address: %v", err)
	}
	addr := strings.TrimSpace(line)

	var logged bytes.Buffer
	var mu sync.Mutex
	s, _ := e.run(ShipperConfig{Primary: addr, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil))})
	last := e.appendInsights(shipInsight("a.example", "1", 1, "scan-a"), shipInsight("a.example", "2", 2, "scan-a"))
	shipWaitFor(t, "everything acknowledged by the old primary", 30*time.Second, func() bool { return s.Stats().AppliedSeq == last })
	st := s.Stats()
	if st.Compression != CompressionGzip || st.Connects != 1 || st.Reconnects != 1 || !strings.Contains(st.LastError, "grpc-encoding") {
		t.Errorf("stats %+v: want one refused zstd stream, then one gzip stream", st)
	}
	if z, g := testutil.ToFloat64(s.m.compression.WithLabelValues(CompressionZstd)), testutil.ToFloat64(s.m.compression.WithLabelValues(CompressionGzip)); z != 0 || g != 1 {
		t.Errorf("longhaul_edge_ship_compression: zstd %v, gzip %v; want 0 and 1", z, g)
	}
	mu.Lock()
	if n := strings.Count(logged.String(), "cannot decode zstd"); n != 1 {
		t.Errorf("the fallback was logged %d times, want once:\n%s", n, logged.String())
	}
	mu.Unlock()

	// The upgrade: the database holds what the old primary applied, and a
	// primary of this build takes the old one's address.
	if _, err := migrate.Up(e.ctx, e.pool); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx, `INSERT INTO edge_ledger (edge_id, applied_seq) VALUES ('edge-test', $1)`, int64(last)); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	e.sent = nil // applied by the old primary, which wrote no rows
	e.startPrimary(addr)
	last = e.appendInsights(shipInsight("b.example", "1", 3, "scan-b"))
	e.waitShipped("edge-test", last, 30*time.Second)
	e.checkTable()
	if st := s.Stats(); st.Compression != CompressionZstd || st.Connects < 2 {
		t.Errorf("stats %+v: want a zstd stream to the upgraded primary", st)
	}
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
