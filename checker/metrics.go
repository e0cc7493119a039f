package checker

import (
	"github.com/prometheus/client_golang/prometheus"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/kafka"
)

type metrics struct {
	jobs         *prometheus.CounterVec // by outcome
	scans        *prometheus.CounterVec // by check and outcome
	scanSeconds  *prometheus.HistogramVec
	insights     prometheus.Counter
	running      prometheus.Gauge
	inflight     prometheus.Gauge
	commitErrors prometheus.Counter
	fetchErrors  prometheus.Counter
	rebalances   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, lane longhaulv1.Lane) (*metrics, error) {
	l := prometheus.Labels{"lane": kafka.LaneName(lane)}
	m := &metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "longhaul_checker_jobs_total", ConstLabels: l,
			Help: "Jobs by outcome: done, handed_on (to the slow lane), dead (dead-letter topic), skipped (no check of this checker), abandoned.",
		}, []string{"outcome"}),
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "longhaul_checker_scans_total", ConstLabels: l,
			Help: "Scans by check and outcome: ok, overrun (fast-lane budget), failed, abandoned.",
		}, []string{"check", "outcome"}),
		scanSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "longhaul_checker_scan_seconds", ConstLabels: l,
			Help:    "Time of one scan, from its start until its insights were pushed and it was completed.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}, []string{"check"}),
		insights: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_checker_insights_total", ConstLabels: l, Help: "Insights pushed.",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "longhaul_checker_running_jobs", ConstLabels: l, Help: "Jobs running now.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "longhaul_checker_inflight_jobs", ConstLabels: l, Help: "Jobs polled and not yet covered by a commit (a crash redoes at most these).",
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_checker_commit_errors_total", ConstLabels: l, Help: "Partition offsets a commit failed to store.",
		}),
		fetchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_checker_fetch_errors_total", ConstLabels: l, Help: "Errors returned by polls.",
		}),
		rebalances: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "longhaul_checker_partitions_released_total", ConstLabels: l, Help: "Partition releases, revoked (committed what finished) or lost (nothing committed).",
		}, []string{"how"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.jobs, m.scans, m.scanSeconds, m.insights, m.running, m.inflight, m.commitErrors, m.fetchErrors, m.rebalances} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
