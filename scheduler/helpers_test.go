package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/kafka"
	"github.com/longhaul/longhaul/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// t0 is where the fake clocks start.
var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// clock is a clock the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// bundle is what a test works with: a schema of its own, a kfake cluster
// of its own, and the scheduler started on them.
type bundle struct {
	ctx   context.Context
	url   string
	pool  *pgxpool.Pool // the test's own connections to the schema
	kafka *kafka.Embedded
	svc   *Service
	clock *clock // nil with the wall clock

	consumerOnce sync.Once
	consumer     *kgo.Client
	seen         []produced
}

// setup starts a scheduler whose Config is cfg with the database, brokers,
// HTTP address, logger and registry filled in. With manual, no loop runs:
// the test calls tick, learn and recomputeRate itself, on a fake clock.
func setup(t *testing.T, manual bool, cfg Config) *bundle {
	t.Helper()
	b := &bundle{ctx: context.Background(), url: pgtest.URL(t)}
	pool, err := pgxpool.New(b.ctx, b.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	b.pool = pool
	if b.kafka, err = kafka.StartEmbedded(1, 4); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.kafka.Close)
	if manual {
		b.clock = newClock()
		cfg.Now = b.clock.Now
		cfg.manual = true
	}
	b.svc = b.start(t, cfg)
	return b
}

// start starts another scheduler on the bundle's database and brokers.
func (b *bundle) start(t *testing.T, cfg Config) *Service {
	t.Helper()
	cfg.DatabaseURL = b.url
	cfg.Brokers = b.kafka.ListenAddrs()
	cfg.HTTPListen = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	cfg.Registry = prometheus.NewRegistry()
	svc, err := Start(b.ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := svc.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return svc
}

// tick runs one tick of the bundle's scheduler and fails the test on error.
func (b *bundle) tick(t *testing.T) tickResult {
	t.Helper()
	res, err := b.svc.tick(b.ctx)
	if err != nil {
		t.Fatalf("tick: %v", err)
	}
	return res
}

// exec runs SQL on the test's pool.
func (b *bundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := b.pool.Exec(b.ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// count runs a query returning one number.
func (b *bundle) count(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := b.pool.QueryRow(b.ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// makeAssets returns n assets of account acct named <prefix>-<i>.example,
// with plans in turn (plans empty: all free).
func makeAssets(acct, prefix string, n int, plans ...Plan) []Asset {
	if len(plans) == 0 {
		plans = []Plan{PlanFree}
	}
	out := make([]Asset, n)
	for i := range out {
		out[i] = Asset{AccountID: acct, Asset: fmt.Sprintf("%s-%04d.example", prefix, i), Plan: plans[i%len(plans)], Checks: []string{"tls", "headers"}}
	}
	return out
}

// register registers assets through RegisterAssets with the service's
// intervals and clock.
func (b *bundle) register(t *testing.T, assets []Asset) {
	t.Helper()
	if _, _, err := RegisterAssets(b.ctx, b.pool, assets, b.svc.cfg.Now(), b.svc.cfg.Intervals); err != nil {
		t.Fatal(err)
	}
}

// post sends a JSON body to the service and decodes the answer into out
// (if not nil), returning the status code.
func (b *bundle) post(t *testing.T, path string, body []byte, out any) int {
	t.Helper()
	resp, err := http.Post("http://"+b.svc.HTTPAddr()+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s: answer: %v", path, err)
		}
	}
	return resp.StatusCode
}

// produced is a job read back from Kafka.
type produced struct {
	topic, key string
	job        *longhaulv1.ScanJob
}

// jobs reads the lanes until until holds for everything read so far (or
// fails the test after within), and returns everything read so far.
func (b *bundle) jobs(t *testing.T, within time.Duration, until func([]produced) bool) []produced {
	t.Helper()
	b.consumerOnce.Do(func() {
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.kafka.ListenAddrs()...),
			kgo.ConsumeTopics(kafka.TopicFast, kafka.TopicSlow),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		b.consumer = cl
	})
	deadline := time.Now().Add(within)
	for !until(b.seen) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: condition not met with %d jobs read", within, len(b.seen))
		}
		ctx, cancel := context.WithTimeout(b.ctx, 200*time.Millisecond)
		fetches := b.consumer.PollFetches(ctx)
		cancel()
		fetches.EachError(func(topic string, p int32, err error) {
			if ctx.Err() == nil {
				t.Fatalf("fetch %s/%d: %v", topic, p, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			j, err := kafka.DecodeJob(r.Value)
			if err != nil {
				t.Fatalf("record on %s: %v", r.Topic, err)
			}
			b.seen = append(b.seen, produced{topic: r.Topic, key: string(r.Key), job: j})
		})
	}
	return b.seen
}

// atLeast is an until for jobs: n jobs read.
func atLeast(n int) func([]produced) bool {
	return func(ps []produced) bool { return len(ps) >= n }
}

// byAsset groups jobs by "account/asset".
func byAsset(ps []produced) map[string][]produced {
	out := map[string][]produced{}
	for _, p := range ps {
		k := p.job.GetAccountId() + "/" + p.job.GetAsset()
		out[k] = append(out[k], p)
	}
	return out
}
