package primary

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

type applierMetrics struct {
	batches     *prometheus.CounterVec   // by status
	rows        *prometheus.CounterVec   // by path
	collapsed   prometheus.Counter       // observations collapsed within batches
	deadLetters prometheus.Counter       // rows refused by PostgreSQL
	resolved    prometheus.Counter       // insights resolved by completions
	seconds     *prometheus.HistogramVec // apply time by path
	retries     prometheus.Counter
	turnWaits   prometheus.Counter // batches applied again after the batch before
	failures    prometheus.Counter
}

func newApplierMetrics(reg prometheus.Registerer) (*applierMetrics, error) {
	m := &applierMetrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "longhaul_primary_batches_total", Help: "Batches received from edges, by outcome.",
		}, []string{"status"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "longhaul_primary_rows_total", Help: "Insight rows written, by write path.",
		}, []string{"path"}),
		collapsed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_primary_collapsed_total", Help: "Observations collapsed into a newer one of the same key within a batch.",
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_primary_dead_letters_total", Help: "Rows PostgreSQL refused, moved to the dead_letters table.",
		}),
		resolved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_primary_resolved_total", Help: "Insights resolved by scan completions.",
		}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "longhaul_primary_apply_seconds", Help: "Time to apply one batch, by write path.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"path"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_primary_apply_retries_total", Help: "Transactions retried after a deadlock or serialization failure.",
		}),
		turnWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_primary_apply_turn_waits_total",
			Help: "Batches applied in parallel that found the batch before them not committed, rolled back and were applied again after it.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "longhaul_primary_apply_failures_total", Help: "Batches that could not be applied (not acknowledged).",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.batches, m.rows, m.collapsed, m.deadLetters, m.resolved, m.seconds, m.retries, m.turnWaits, m.failures} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *applierMetrics) observe(r Result) {
	// The status in lower case: applied, duplicate, out_of_sequence.
	m.batches.WithLabelValues(strings.ToLower(r.Status.String())).Inc()
	m.rows.WithLabelValues(string(r.Path)).Add(float64(r.Rows))
	m.collapsed.Add(float64(r.Collapsed))
	m.deadLetters.Add(float64(r.DeadLetters))
	m.resolved.Add(float64(r.Resolved))
	m.seconds.WithLabelValues(string(r.Path)).Observe(r.Duration.Seconds())
}
