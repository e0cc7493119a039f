// Package e2e holds the tests that run the whole pipeline in one process:
// scheduler → Kafka (kfake) → checkers → edge → primary → PostgreSQL.
package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/checker"
	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/kafka"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/primary"
	"github.com/longhaul/longhaul/pushclient"
	"github.com/longhaul/longhaul/scheduler"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Every registered asset is scheduled, sent down its lane, scanned by the
// checkers (slow assets handed from the fast lane to the slow one), pushed
// to the edge, shipped to the primary and applied: each asset's insights end
// up in the table, and every scan is recorded complete.
func TestPipelineScansEveryAssetIntoPostgreSQL(t *testing.T) {
	ctx := context.Background()
	discard := slog.New(slog.DiscardHandler)
	url := pgtest.URL(t)

	prim, err := primary.Start(ctx, primary.Config{DatabaseURL: url, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prim.Stop(ctx) })
	e, err := edge.Start(ctx, edge.Config{Region: "eu", NodeID: "n1", DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		HTTPListen: "127.0.0.1:0", Primary: prim.Addr(), Logger: discard,
		Shipper: edge.ShipperConfig{MaxBatchAge: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(ctx) })
	k, err := kafka.StartEmbedded(1, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)

	// A web server for the real checks: TLS with a certificate the checks
	// trust, and none of the security headers.
	site := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Server", "nginx/1.2.3")
		fmt.Fprintln(w, "hello")
	}))
	site.Config.ErrorLog = log.New(io.Discard, "", 0) // the tls check's old-protocol probes
	site.StartTLS()
	t.Cleanup(site.Close)
	roots := x509.NewCertPool()
	roots.AddCert(site.Certificate())

	sched, err := scheduler.Start(ctx, scheduler.Config{DatabaseURL: url, Brokers: k.ListenAddrs(), HTTPListen: "127.0.0.1:0",
		Partitions: 4, Tick: 50 * time.Millisecond, RateEvery: time.Second, BufferFactor: 50, LearnEvery: 200 * time.Millisecond,
		Intervals: scheduler.Intervals{scheduler.PlanFree: 2 * time.Second, scheduler.PlanPro: 2 * time.Second,
			scheduler.PlanBusiness: 2 * time.Second, scheduler.PlanEnterprise: 2 * time.Second},
		Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sched.Stop(ctx) })

	const n = 200
	var assets []scheduler.Asset
	plans := []scheduler.Plan{scheduler.PlanFree, scheduler.PlanPro, scheduler.PlanBusiness, scheduler.PlanEnterprise}
	for i := 0; i < n; i++ {
		assets = append(assets, scheduler.Asset{AccountID: fmt.Sprintf("acct-%d", i%7), Asset: fmt.Sprintf("host-%03d.example", i),
			Plan: plans[i%4], Checks: []string{checks.NameSynthetic}})
	}
	assets = append(assets, scheduler.Asset{AccountID: "acct-web", Asset: site.URL + "/", Plan: scheduler.PlanEnterprise,
		Checks: []string{checks.NameTLS, checks.NameHeaders}})
	body, _ := json.Marshal(map[string]any{"assets": assets})
	resp, err := http.Post("http://"+sched.HTTPAddr()+"/v1/assets", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/assets: %s", resp.Status)
	}

	syn := checks.SyntheticConfig{Insights: 5, Fast: 5 * time.Millisecond, Slow: 300 * time.Millisecond, SlowFraction: 0.1, Varying: -1}
	cs, err := checks.Select([]string{checks.NameSynthetic, checks.NameTLS, checks.NameHeaders},
		checks.Options{Synthetic: syn, RootCAs: roots, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := pushclient.New(pushclient.Config{Edges: []string{e.Addr()}, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var checkers []*checker.Checker
	for _, lane := range []longhaulv1.Lane{longhaulv1.Lane_FAST, longhaulv1.Lane_SLOW} {
		c, err := checker.New(checker.Config{Brokers: k.ListenAddrs(), Lane: lane, Checks: cs, Pusher: checker.FromPushClient(pc),
			FastBudget: 100 * time.Millisecond, CommitInterval: 50 * time.Millisecond, Logger: discard})
		if err != nil {
			t.Fatal(err)
		}
		checkers = append(checkers, c)
		wg.Go(func() { _ = c.Run(runCtx) })
	}
	t.Cleanup(func() { stop(); wg.Wait() })

	db, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	// Every asset has each of its checks' scans completed and applied.
	want := n + 2
	deadline := time.Now().Add(90 * time.Second)
	for {
		var got int
		err := db.QueryRow(ctx, `SELECT count(DISTINCT (account_id, asset, checker)) FROM scans WHERE completed_at IS NOT NULL AND resolved_at IS NOT NULL`).Scan(&got)
		if err != nil {
			t.Fatal(err)
		}
		if got == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d asset checks scanned and applied; fast %+v, slow %+v", got, want, checkers[0].Stats(), checkers[1].Stats())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Each synthetic asset's open insights are exactly what its scan finds.
	syncheck := checks.NewSynthetic(syn)
	rows, err := db.Query(ctx, `SELECT account_id, asset, count(*) FILTER (WHERE resolved_at IS NULL) FROM insights WHERE checker = 'synthetic' GROUP BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	open := map[string]int{}
	for rows.Next() {
		var acct, asset string
		var c int
		if err := rows.Scan(&acct, &asset, &c); err != nil {
			t.Fatal(err)
		}
		open[acct+"/"+asset] = c
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slow := 0
	for _, a := range assets[:n] {
		d, count := syncheck.Cost(checks.Target{AccountID: a.AccountID, Asset: a.Asset})
		if d > 100*time.Millisecond {
			slow++
		}
		if got := open[a.AccountID+"/"+a.Asset]; got != count {
			t.Errorf("%s/%s: %d open insights, its scan finds %d", a.AccountID, a.Asset, got, count)
		}
	}
	// The real checks found the site's missing headers and its version.
	var headerKinds int
	if err := db.QueryRow(ctx, `SELECT count(DISTINCT kind) FROM insights WHERE account_id = 'acct-web' AND kind LIKE 'headers.%'`).Scan(&headerKinds); err != nil {
		t.Fatal(err)
	}
	if headerKinds < 3 {
		t.Errorf("the headers check found %d kinds on a site with no security headers", headerKinds)
	}
	fast, slowLane := checkers[0].Stats(), checkers[1].Stats()
	if slow > 0 && (fast.HandedOn == 0 || slowLane.Scans == 0) {
		t.Errorf("%d slow assets, yet fast lane handed on %d and the slow lane scanned %d", slow, fast.HandedOn, slowLane.Scans)
	}
	t.Logf("%d assets (%d slow); fast lane %+v; slow lane %+v; scheduler %+v", want-1, slow, fast, slowLane, sched.Stats())
}
