package edge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/longhaul/longhaul/wal"
)

// Budget is a region's latency budget: how long a checker may wait for a
// push to be acknowledged, and how long an insight may take to be visible
// in the primary, each at the 99th percentile over the last Window. Zero
// fields take the defaults, which suit a region far from the primary
// (an ocean away: 100–200 ms of round trip).
//
// The stages (see /v1/budget and longhaul_edge_stage_seconds) share the
// two budgets:
//
//	AckP99 (50ms)       validation  Shares.Validation × AckP99 (20 %: 10ms)
//	                    wal_sync    Shares.WALSync × AckP99    (60 %: 30ms)
//	                    (the rest: gRPC, decoding, scheduling)
//	VisibleP99 (2s)     ship_round_trip  Shares.RoundTrip × VisibleP99 (25 %: 500ms)
//	                    apply            Shares.Apply × VisibleP99     (15 %: 300ms)
//	                    queue_wait       what is left: VisibleP99 − (measured
//	                                     round trip p99 + apply p99) − Margin
//
// The ack and end_to_end stages are held to AckP99 and VisibleP99 whole;
// the shares say which stage eats the budget when it is missed. queue_wait
// has no fixed share: it is the time the shipper may spend building larger
// batches, and the shipper steers it (see ShipperConfig.Budget) so that the
// oldest insight of a batch is still visible within VisibleP99, never
// longer than ShipperConfig.MaxBatchAge (250ms unless raised: `longhaul
// edge --batch-age`).
type Budget struct {
	// AckP99 bounds the time from a push's arrival to its answer (durable
	// in the WAL). Default 50ms.
	AckP99 time.Duration
	// VisibleP99 bounds the time from a push to the insight's being
	// applied in the primary. Default 2s.
	VisibleP99 time.Duration
	// Shares of the two budgets for the stages; see Shares.
	Shares Shares
	// Margin is kept free of the visible budget when the shipper decides
	// how long a batch may wait: jitter, building the batch, a link
	// slowing down while the batch is under way. Default VisibleP99 / 10.
	Margin time.Duration
	// Window is the span the p99s are taken over (sliding by a twelfth of
	// it). Default 1 minute.
	Window time.Duration
}

// Shares are fractions of a budget given to stages. Zero fields take the
// defaults; the shares of one budget must not add up to more than 1 (with
// Margin, for the visible budget).
type Shares struct {
	// Validation and WALSync share AckP99. Defaults 0.2 and 0.6.
	Validation, WALSync float64
	// RoundTrip and Apply share VisibleP99. Defaults 0.25 and 0.15.
	RoundTrip, Apply float64
}

// Budget defaults.
const (
	DefaultAckP99     = 50 * time.Millisecond
	DefaultVisibleP99 = 2 * time.Second
	DefaultWindow     = time.Minute
)

// DefaultBudget returns the default budget, every field filled in.
func DefaultBudget() Budget { return Budget{}.withDefaults() }

func (b Budget) withDefaults() Budget {
	if b.AckP99 == 0 {
		b.AckP99 = DefaultAckP99
	}
	if b.VisibleP99 == 0 {
		b.VisibleP99 = DefaultVisibleP99
	}
	if b.Margin == 0 {
		b.Margin = b.VisibleP99 / 10
	}
	if b.Window == 0 {
		b.Window = DefaultWindow
	}
	for _, s := range []struct {
		v   *float64
		def float64
	}{{&b.Shares.Validation, 0.2}, {&b.Shares.WALSync, 0.6}, {&b.Shares.RoundTrip, 0.25}, {&b.Shares.Apply, 0.15}} {
		if *s.v == 0 {
			*s.v = s.def
		}
	}
	return b
}

func (b Budget) validate() error {
	var errs []error
	if b.AckP99 <= 0 {
		errs = append(errs, fmt.Errorf("ack p99 %v must be positive", b.AckP99))
	}
	if b.VisibleP99 <= 0 {
		errs = append(errs, fmt.Errorf("visible p99 %v must be positive", b.VisibleP99))
	}
	if b.Margin < 0 || (b.VisibleP99 > 0 && b.Margin >= b.VisibleP99) {
		errs = append(errs, fmt.Errorf("margin %v must be in [0, visible p99 %v)", b.Margin, b.VisibleP99))
	}
	if b.Window < time.Second {
		errs = append(errs, fmt.Errorf("window %v is under 1s", b.Window))
	}
	for name, v := range map[string]float64{"validation": b.Shares.Validation, "WAL sync": b.Shares.WALSync,
		"round trip": b.Shares.RoundTrip, "apply": b.Shares.Apply} {
		if v < 0 || v > 1 {
			errs = append(errs, fmt.Errorf("the %s share %v is outside [0, 1]", name, v))
		}
	}
	if s := b.Shares.Validation + b.Shares.WALSync; s > 1 {
		errs = append(errs, fmt.Errorf("the ack budget's shares add up to %v, over 1", s))
	}
	if b.VisibleP99 > 0 {
		if s := b.Shares.RoundTrip + b.Shares.Apply + b.Margin.Seconds()/b.VisibleP99.Seconds(); s > 1 {
			errs = append(errs, fmt.Errorf("the visible budget's shares and margin add up to %.2f of it, over 1", s))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("edge: invalid budget: %w", errors.Join(errs...))
	}
	return nil
}

func share(d time.Duration, f float64) time.Duration { return time.Duration(float64(d) * f) }

// steerWait is the budget's rule for how long the oldest record of a batch
// that is not full may wait before the batch is sent: as long as it can
// still be visible within visible, given ship (the expected p99 of a
// batch's round trip, apply included) and the margin; never less than 0
// nor more than limit.
func steerWait(visible, ship, margin, limit time.Duration) time.Duration {
	return min(max(visible-ship-margin, 0), limit)
}

// The budget file gives each region its budget, in JSON:
//
//	{
//	  "default": {"ack_p99": "50ms", "visible_p99": "2s"},
//	  "regions": {
//	    "eu": {"ack_p99": "50ms", "visible_p99": "1s"},
//	    "ap": {"ack_p99": "50ms", "visible_p99": "2s", "margin": "300ms",
//	           "shares": {"round_trip": 0.3, "apply": 0.1}}
//	  }
//	}
//
// Durations are Go durations ("250ms", "2s"); every field is optional
// (missing ones take the defaults, see Budget); "window" sets Window. An
// edge takes its region's entry, or "default" when its region has none; a
// file with neither for the region is an error. Unknown fields are errors.
type budgetFile struct {
	Default *budgetSpec            `json:"default"`
	Regions map[string]*budgetSpec `json:"regions"`
}

type budgetSpec struct {
	AckP99     jsonDuration `json:"ack_p99"`
	VisibleP99 jsonDuration `json:"visible_p99"`
	Margin     jsonDuration `json:"margin"`
	Window     jsonDuration `json:"window"`
	Shares     struct {
		Validation float64 `json:"validation"`
		WALSync    float64 `json:"wal_sync"`
		RoundTrip  float64 `json:"round_trip"`
		Apply      float64 `json:"apply"`
	} `json:"shares"`
}

type jsonDuration time.Duration

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string such as \"250ms\": %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = jsonDuration(v)
	return nil
}

// ParseBudgetFile returns region's budget from a budget file's contents
// (see the format above), defaults filled in and validated.
func ParseBudgetFile(data []byte, region string) (Budget, error) {
	var f budgetFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Budget{}, fmt.Errorf("edge: budget file: %w", err)
	}
	spec, ok := f.Regions[region]
	if !ok || spec == nil {
		spec = f.Default
	}
	if spec == nil {
		return Budget{}, fmt.Errorf("edge: budget file: no budget for region %q and no default", region)
	}
	b := Budget{
		AckP99: time.Duration(spec.AckP99), VisibleP99: time.Duration(spec.VisibleP99),
		Margin: time.Duration(spec.Margin), Window: time.Duration(spec.Window),
		Shares: Shares{Validation: spec.Shares.Validation, WALSync: spec.Shares.WALSync,
			RoundTrip: spec.Shares.RoundTrip, Apply: spec.Shares.Apply},
	}.withDefaults()
	if err := b.validate(); err != nil {
		return Budget{}, fmt.Errorf("edge: budget file, region %q: %w", region, err)
	}
	return b, nil
}

// ReadBudgetFile reads a budget file (see ParseBudgetFile) and returns
// region's budget.
func ReadBudgetFile(path, region string) (Budget, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Budget{}, fmt.Errorf("edge: budget file: %w", err)
	}
	return ParseBudgetFile(data, region)
}

// BudgetReport is the edge's latency against its budget over the recent
// window: GET /v1/budget answers it as JSON, Service.Budget returns it.
// The JSON field names are stable. Times are in seconds; a stage with no
// observation in the window has count 0, quantiles 0, and is within.
//
//	{"region": "eu", "node": "n1",
//	 "budget": {"ack_p99": "50ms", "visible_p99": "2s"},
//	 "window_seconds": 60,
//	 "stages": [{"stage": "validation", "p50_seconds": 0.00004, "p99_seconds": 0.0002,
//	             "budget_seconds": 0.01, "within": true, "count": 1200}, …],
//	 "ack": {"p99_seconds": 0.004, "budget_seconds": 0.05, "within": true, "count": 1200},
//	 "visible": {"p99_seconds": 1.7, "budget_seconds": 2, "within": true, "count": 3600,
//	             "oldest_pending_seconds": 0.4},
//	 "within": true,
//	 "batch": {"mode": "budget", "last_records": 412, "last_bytes": 98311,
//	           "target_wait_seconds": 1.4, "max_wait_seconds": 2, "records_per_batch": 405.2}}
//
// (here an edge with --batch-age 2s, so that the budget alone sizes its
// batches).
type BudgetReport struct {
	Region        string        `json:"region"`
	Node          string        `json:"node"`
	Budget        BudgetTargets `json:"budget"`
	WindowSeconds float64       `json:"window_seconds"`
	// Stages in the order an insight goes through them: validation,
	// wal_sync, ack, queue_wait, ship_round_trip, apply, end_to_end.
	Stages []StageReport `json:"stages"`
	// Ack is the ack stage against AckP99.
	Ack Verdict `json:"ack"`
	// Visible is the end_to_end stage against VisibleP99; it is also over
	// budget when the oldest insight not yet acknowledged by the primary
	// has waited longer than VisibleP99 (the link or the primary is down:
	// no ack comes to measure).
	Visible VisibleVerdict `json:"visible"`
	// Within is Ack.Within && Visible.Within.
	Within bool        `json:"within"`
	Batch  BatchReport `json:"batch"`
}

// BudgetTargets is the region's budget in a report, as Go durations
// ("50ms", "2s"), as a budget file writes them.
type BudgetTargets struct {
	AckP99     string `json:"ack_p99"`
	VisibleP99 string `json:"visible_p99"`
}

// StageReport is one stage's p50 and p99 over the window against its
// budget (see Budget for how it is derived).
type StageReport struct {
	Stage         string  `json:"stage"`
	P50Seconds    float64 `json:"p50_seconds"`
	P99Seconds    float64 `json:"p99_seconds"`
	BudgetSeconds float64 `json:"budget_seconds"`
	Within        bool    `json:"within"`
	// Count is the observations in the window: requests for validation,
	// wal_sync and ack, batches for ship_round_trip and apply, insights
	// (WAL records) for queue_wait and end_to_end.
	Count uint64 `json:"count"`
}

// Verdict is a p99 against its budget.
type Verdict struct {
	P99Seconds    float64 `json:"p99_seconds"`
	BudgetSeconds float64 `json:"budget_seconds"`
	Within        bool    `json:"within"`
	Count         uint64  `json:"count"`
}

// VisibleVerdict is the visible budget's Verdict, with the age of the
// oldest insight the primary has not acknowledged (0 when none).
type VisibleVerdict struct {
	Verdict
	OldestPendingSeconds float64 `json:"oldest_pending_seconds"`
}

// BatchReport is what the shipper chose.
type BatchReport struct {
	// Mode is "budget" (steered by the visible budget), "fixed" (a flush
	// every FixedInterval) or "max_age" (a fixed MaxBatchAge).
	Mode string `json:"mode"`
	// LastRecords and LastBytes are the WAL records and payload bytes of
	// the last batch sent.
	LastRecords int `json:"last_records"`
	LastBytes   int `json:"last_bytes"`
	// TargetWaitSeconds is how long the oldest record of a batch that is
	// not full may now wait; MaxWaitSeconds its cap (MaxBatchAge).
	TargetWaitSeconds float64 `json:"target_wait_seconds"`
	MaxWaitSeconds    float64 `json:"max_wait_seconds"`
	// RecordsPerBatch is the mean since the edge started.
	RecordsPerBatch float64 `json:"records_per_batch"`
}

// budgets makes an edge's budget report.
type budgets struct {
	region, node string
	budget       Budget
	stages       *stageSet
	wal          *wal.Log
	shipper      *Shipper
}

func (b *budgets) report(now time.Time) BudgetReport {
	bu := b.budget
	r := BudgetReport{Region: b.region, Node: b.node, WindowSeconds: bu.Window.Seconds()}
	r.Budget.AckP99, r.Budget.VisibleP99 = bu.AckP99.String(), bu.VisibleP99.String()
	steer := b.shipper.steer(now)
	limits := [numStages]time.Duration{
		stageValidation: share(bu.AckP99, bu.Shares.Validation),
		stageWALSync:    share(bu.AckP99, bu.Shares.WALSync),
		stageAck:        bu.AckP99,
		stageQueueWait:  max(bu.VisibleP99-steer.ship-bu.Margin, 0),
		stageRoundTrip:  share(bu.VisibleP99, bu.Shares.RoundTrip),
		stageApply:      share(bu.VisibleP99, bu.Shares.Apply),
		stageEndToEnd:   bu.VisibleP99,
	}
	r.Stages = make([]StageReport, numStages)
	for st := range numStages {
		q, n := b.stages.m[st].window(now, 0.5, 0.99)
		r.Stages[st] = StageReport{Stage: stageNames[st], P50Seconds: q[0].Seconds(), P99Seconds: q[1].Seconds(),
			BudgetSeconds: limits[st].Seconds(), Within: q[1] <= limits[st], Count: n}
	}
	verdict := func(st stage) Verdict {
		s := r.Stages[st]
		return Verdict{P99Seconds: s.P99Seconds, BudgetSeconds: s.BudgetSeconds, Within: s.Within, Count: s.Count}
	}
	r.Ack = verdict(stageAck)
	r.Visible.Verdict = verdict(stageEndToEnd)
	if oldest := b.wal.Stats().OldestAppendedAt; !oldest.IsZero() {
		age := max(now.Sub(oldest), 0)
		r.Visible.OldestPendingSeconds = age.Seconds()
		if age > bu.VisibleP99 {
			r.Visible.Within = false
		}
	}
	r.Within = r.Ack.Within && r.Visible.Within
	st := b.shipper.Stats()
	r.Batch = BatchReport{Mode: steer.mode, LastRecords: st.LastBatchRecords, LastBytes: st.LastBatchBytes,
		TargetWaitSeconds: steer.wait.Seconds(), MaxWaitSeconds: steer.limit.Seconds()}
	if st.BatchesSent > 0 {
		r.Batch.RecordsPerBatch = float64(st.RecordsSent) / float64(st.BatchesSent)
	}
	return r
}

// within is the compact form of a report, for gossip: whether the edge is
// within its budget and a short summary, e.g.
// "within: ack 3.1ms/50ms, visible 840ms/1s" or
// "over: visible 1.31s/1s, oldest pending 4s".
func (r *BudgetReport) within() (bool, string) {
	d := func(sec float64) string { return roundDuration(time.Duration(sec * float64(time.Second))).String() }
	var b strings.Builder
	if r.Within {
		b.WriteString("within: ")
	} else {
		b.WriteString("over: ")
	}
	var parts []string
	if r.Within || !r.Ack.Within {
		parts = append(parts, fmt.Sprintf("ack %s/%s", d(r.Ack.P99Seconds), r.Budget.AckP99))
	}
	if r.Within || !r.Visible.Within {
		parts = append(parts, fmt.Sprintf("visible %s/%s", d(r.Visible.P99Seconds), r.Budget.VisibleP99))
		if r.Visible.OldestPendingSeconds > r.Visible.BudgetSeconds {
			parts = append(parts, "oldest pending "+d(r.Visible.OldestPendingSeconds))
		}
	}
	b.WriteString(strings.Join(parts, ", "))
	return r.Within, b.String()
}

// roundDuration keeps about three significant digits.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// startBudgets sets up the budget report over stages (shared by the server
// and the shipper) and registers the stages' histograms and the report's
// gauges.
func (s *Service) startBudgets(stages *stageSet) error {
	s.budgets = &budgets{region: s.cfg.Region, node: s.cfg.NodeID, budget: s.cfg.Budget,
		stages: stages, wal: s.wal, shipper: s.shipper}
	for _, c := range []prometheus.Collector{stages, newBudgetCollector(s.budgets)} {
		if err := s.cfg.Registry.Register(c); err != nil {
			return fmt.Errorf("edge: budget metrics: %w", err)
		}
	}
	return nil
}

// Budget returns the edge's latency against its budget over the recent
// window (what GET /v1/budget answers).
func (s *Service) Budget() BudgetReport { return s.budgets.report(time.Now()) }

// WithinBudget reports whether the edge is within its budget (push
// acknowledged and insight visible, p99 over the window) with a summary
// short enough for gossip metadata (under 100 bytes), e.g.
// "within: ack 3.1ms/50ms, visible 840ms/1s". Safe to call at any time from
// any goroutine, after Stop too.
func (s *Service) WithinBudget() (bool, string) {
	r := s.Budget()
	return r.within()
}

// serveBudget answers GET /v1/budget.
func (s *Service) serveBudget(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s.Budget())
}

// budgetCollector exports the report as gauges, each labelled with the
// region:
//
//	longhaul_edge_stage_window_seconds{stage, quantile="0.5"|"0.99"}
//	longhaul_edge_stage_budget_seconds{stage}
//	longhaul_edge_budget_within{budget="ack"|"visible"|"all"}  1 or 0
type budgetCollector struct {
	b                     *budgets
	window, limit, within *prometheus.Desc
}

func newBudgetCollector(b *budgets) *budgetCollector {
	labels := prometheus.Labels{"region": b.region}
	return &budgetCollector{b: b,
		window: prometheus.NewDesc("longhaul_edge_stage_window_seconds",
			"Quantiles of each stage's latency over the budget's window (see /v1/budget).", []string{"stage", "quantile"}, labels),
		limit: prometheus.NewDesc("longhaul_edge_stage_budget_seconds",
			"Each stage's share of the region's budget; queue_wait's is what the visible budget leaves after the measured round trip and apply.", []string{"stage"}, labels),
		within: prometheus.NewDesc("longhaul_edge_budget_within",
			"1 when the p99 over the window is within the region's budget: ack, visible, and all (both).", []string{"budget"}, labels),
	}
}

func (c *budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.window
	ch <- c.limit
	ch <- c.within
}

func (c *budgetCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.b.report(time.Now())
	for _, s := range r.Stages {
		ch <- prometheus.MustNewConstMetric(c.window, prometheus.GaugeValue, s.P50Seconds, s.Stage, "0.5")
		ch <- prometheus.MustNewConstMetric(c.window, prometheus.GaugeValue, s.P99Seconds, s.Stage, "0.99")
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, s.BudgetSeconds, s.Stage)
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(c.within, prometheus.GaugeValue, b2f(r.Ack.Within), "ack")
	ch <- prometheus.MustNewConstMetric(c.within, prometheus.GaugeValue, b2f(r.Visible.Within), "visible")
	ch <- prometheus.MustNewConstMetric(c.within, prometheus.GaugeValue, b2f(r.Within), "all")
}
