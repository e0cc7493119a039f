package scheduler

import "github.com/prometheus/client_golang/prometheus"

// Reasons a job was produced, the reason label of
// longhaul_scheduler_jobs_total.
const (
	reasonScheduled = "scheduled"
	reasonOnDemand  = "on_demand"
)

type metrics struct {
	jobs          *prometheus.CounterVec // by lane and reason
	rate          prometheus.Gauge
	burst         prometheus.Gauge
	due           prometheus.Gauge
	pending       prometheus.Gauge
	assets        *prometheus.GaugeVec // by plan
	produceErrors prometheus.Counter
	tickErrors    prometheus.Counter
	invalidJobs   prometheus.Counter
	registered    *prometheus.CounterVec // by result
	requests      prometheus.Counter
	learned       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "longhaul_scheduler_jobs_total", Help: "Scan jobs produced to Kafka and acknowledged, by lane and reason (scheduled, on_demand).",
		}, []string{"lane", "reason"}),
		rate: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "longhaul_scheduler_rate", Help: "Scheduled jobs per second the token bucket releases: max(1, Σ assets of a plan ÷ its interval) × buffer factor.",
		}),
		burst: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "longhaul_scheduler_burst", Help: "Scheduled jobs the token bucket holds at the most.",
		}),
		due: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "longhaul_scheduler_due_assets", Help: "Assets due for a scan and not yet scheduled (the backlog), at the last count.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "longhaul_scheduler_pending_requests", Help: "On-demand scan requests not served yet, at the last count.",
		}),
		assets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "longhaul_scheduler_assets", Help: "Registered assets by plan, at the last rate computation.",
		}, []string{"plan"}),
		produceErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_scheduler_produce_errors_total", Help: "Ticks whose jobs Kafka did not acknowledge; their assets stayed due.",
		}),
		tickErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_scheduler_tick_errors_total", Help: "Ticks that failed (database or Kafka).",
		}),
		invalidJobs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_scheduler_invalid_jobs_total", Help: "Assets whose row makes no valid job (written around the API); skipped for an interval.",
		}),
		registered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "longhaul_scheduler_registered_assets_total", Help: "Assets registered over HTTP, by result (created, updated).",
		}, []string{"result"}),
		requests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_scheduler_scan_requests_total", Help: "On-demand scan requests recorded.",
		}),
		learned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_scheduler_costs_learned_total", Help: "Asset cost updates from completed scans.",
		}),
	}
	for _, c := range []prometheus.Collector{m.jobs, m.rate, m.burst, m.due, m.pending, m.assets, m.produceErrors,
		m.tickErrors, m.invalidJobs, m.registered, m.requests, m.learned} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
