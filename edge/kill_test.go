package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/wan"
)

// childEnv, when set, makes the test binary run an edge (see TestMain): its
// value is the edge's configuration in JSON.
const childEnv = "LONGHAUL_TEST_EDGE_CHILD"

type childConfig struct {
	DataDir, Primary, Listen, HTTPListen string
}

func runChildEdge(raw string) int {
	var c childConfig
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		fmt.Fprintln(os.Stderr, "child edge:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	svc, err := Start(ctx, Config{Region: "eu", NodeID: "crashy", DataDir: c.DataDir, Primary: c.Primary,
		Listen: c.Listen, HTTPListen: c.HTTPListen, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Shipper: ShipperConfig{MaxBatchAge: 20 * time.Millisecond, MaxBatchRecords: 500, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child edge:", err)
		return 1
	}
	<-ctx.Done()
	if err := svc.Stop(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "child edge:", err)
		return 1
	}
	return 0
}

// edgeProcess is an edge running as a child process.
type edgeProcess struct {
	t   *testing.T
	cfg childConfig
	cmd *exec.Cmd
}

func (p *edgeProcess) start() {
	p.t.Helper()
	raw, _ := json.Marshal(p.cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmd = cmd
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + p.cfg.HTTPListen + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("child edge not up after 20s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *edgeProcess) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

func (p *edgeProcess) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Wait()
}

var walRecordsRE = regexp.MustCompile(`(?m)^longhaul_edge_wal_records (\S+)$`)

func (p *edgeProcess) unshipped() (int, error) {
	resp, err := http.Get("http://" + p.cfg.HTTPListen + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := walRecordsRE.FindSubmatch(body)
	if m == nil {
		return 0, fmt.Errorf("no WAL records gauge")
	}
	f, err := strconv.ParseFloat(string(m[1]), 64)
	return int(f), err
}

// TestKillNineLoop: an edge under concurrent pushes is SIGKILLed at random
// moments and restarted, again and again. Pass: every insight acknowledged
// before a kill is in PostgreSQL at the end, each row is one write that was
// made (no mixed or invented rows), and no row is older than the newest
// acknowledged write of its key (last writer wins held).
func TestKillNineLoop(t *testing.T) {
	t.Parallel()
	kills := 8
	if os.Getenv("LONGHAUL_LONG") != "" {
		kills = 60
	}
	ctx := context.Background()
	url := pgtest.URL(t)
	p := startPrimary(t, url, "127.0.0.1:0")
	edge := &edgeProcess{t: t, cfg: childConfig{DataDir: t.TempDir(), Primary: p.Addr(), Listen: freeAddr(t), HTTPListen: freeAddr(t)}}
	edge.start()

	client, _ := dialIngest(t, edge.cfg.Listen)

	// Each write has a unique counter, used as its time offset and in its
	// details; keys repeat, so last-writer-wins is exercised.
	const keys = 300
	base := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	var (
		mu       sync.Mutex
		counter  int64
		acked    = map[string]int64{}          // key -> newest acknowledged write
		written  = map[string]map[int64]bool{} // key -> every write attempted
		ackedN   int
		failures int
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				req := &longhaulv1.PushRequest{}
				var mine []struct {
					key string
					c   int64
				}
				mu.Lock()
				for range 20 {
					counter++
					key := fmt.Sprintf("k%03d", rng.IntN(keys))
					details, _ := structpb.NewStruct(map[string]any{"c": float64(counter)})
					req.Insights = append(req.Insights, &longhaulv1.Insight{AccountId: "acme", Asset: "a", Kind: "kill", Subject: key,
						Severity: longhaulv1.Severity_LOW, Details: details, ObservedAt: timestamppb.New(base.Add(time.Duration(counter) * time.Microsecond)),
						ScanId: "s", Checker: "c"})
					if written[key] == nil {
						written[key] = map[int64]bool{}
					}
					written[key][counter] = true
					mine = append(mine, struct {
						key string
						c   int64
					}{key, counter})
				}
				mu.Unlock()
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := client.Push(cctx, req)
				cancel()
				mu.Lock()
				if err != nil {
					failures++
				} else {
					ackedN += len(mine)
					for _, m := range mine {
						acked[m.key] = max(acked[m.key], m.c)
					}
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
	rng := rand.New(rand.NewPCG(42, 7))
	for range kills {
		time.Sleep(time.Duration(150+rng.IntN(450)) * time.Millisecond)
		edge.kill()
		edge.start()
	}
	close(stop)
	wg.Wait()
	defer edge.stop()

	eventually(t, "the restarted edge ships everything", func() (bool, string) {
		n, err := edge.unshipped()
		return err == nil && n == 0, fmt.Sprint(n, " unshipped ", err)
	})
	db, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(ctx, `SELECT subject, (details->>'c')::bigint, last_seen_at FROM insights WHERE kind = 'kill'`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for rows.Next() {
		var key string
		var c int64
		var seen time.Time
		if err := rows.Scan(&key, &c, &seen); err != nil {
			t.Fatal(err)
		}
		if !seen.Equal(base.Add(time.Duration(c) * time.Microsecond)) {
			t.Errorf("%s: details of write %d with the time of another write (%v)", key, c, seen)
		}
		got[key] = c
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	for key, c := range acked {
		g, ok := got[key]
		switch {
		case !ok:
			t.Errorf("%s: acknowledged write %d lost", key, c)
		case g < c:
			t.Errorf("%s: table holds write %d, older than the acknowledged %d", key, g, c)
		}
	}
	for key, c := range got {
		if !written[key][c] {
			t.Errorf("%s: table holds write %d that no one made", key, c)
		}
	}
	t.Logf("%d kills, %d insights acknowledged over %d keys, %d pushes failed during kills, %d rows checked", kills, ackedN, len(acked), failures, len(got))
	if ackedN == 0 {
		t.Fatal("nothing was acknowledged: the test tested nothing")
	}
}

// TestSIGTERMLeavesTheRestInTheWAL: on SIGTERM the edge answers the pushes
// under way and exits 0; what it had not shipped (the link to the primary
// is down) stays in its WAL and arrives after the next start.
func TestSIGTERMLeavesTheRestInTheWAL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.URL(t)
	p := startPrimary(t, url, "127.0.0.1:0")
	link := wan.New(t, p.Addr())
	link.Disable()
	edge := &edgeProcess{t: t, cfg: childConfig{DataDir: t.TempDir(), Primary: link.Addr(), Listen: freeAddr(t), HTTPListen: freeAddr(t)}}
	edge.start()
	client, _ := dialIngest(t, edge.cfg.Listen)
	const pushes = 20
	for i := range pushes {
		req := &longhaulv1.PushRequest{}
		for j := range 10 {
			req.Insights = append(req.Insights, insight("scan-term", "term", fmt.Sprintf("%d-%d", i, j), time.Now()))
		}
		if _, err := client.Push(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if err := edge.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := edge.cmd.Wait(); err != nil {
		t.Fatalf("edge after SIGTERM: %v, want exit status 0", err)
	}
	link.Enable()
	edge.start()
	defer edge.stop()
	db, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	eventually(t, "the insights left in the WAL arrive after the restart", func() (bool, string) {
		var n int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM insights WHERE kind = 'term'`).Scan(&n); err != nil {
			return false, err.Error()
		}
		return n == pushes*10, fmt.Sprint(n, " rows")
	})
}
