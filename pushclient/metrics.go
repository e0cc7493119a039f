package pushclient

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	calls          *prometheus.CounterVec   // Push and Complete calls, by method and final code
	attempts       *prometheus.CounterVec   // RPCs, by method, edge and code
	insights       *prometheus.CounterVec   // insights acknowledged, by edge
	retries        *prometheus.CounterVec   // failed attempts sent again, by method, edge and code
	failovers      *prometheus.CounterVec   // moves away from an edge, by the edge left and the code that made the client leave
	rateLimited    *prometheus.CounterVec   // attempts refused as over the client's rate, by edge
	callSeconds    *prometheus.HistogramVec // successful calls, by method
	attemptSeconds *prometheus.HistogramVec // acknowledged attempts, by method and edge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	buckets := prometheus.ExponentialBuckets(0.0005, 2, 18) // 0.5ms .. ~65s
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "longhaul_pushclient_calls_total",
			Help: "Push and Complete calls, by method and the gRPC code they ended with."}, []string{"method", "code"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "longhaul_pushclient_attempts_total",
			Help: "PushStream and CompleteScan calls to edges, by method, edge and gRPC code."}, []string{"method", "edge", "code"}),
		insights: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "longhaul_pushclient_insights_total",
			Help: "Insights acknowledged (durable on an edge), by edge."}, []string{"edge"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "longhaul_pushclient_retries_total",
			Help: "Failed attempts whose content was sent again, by method, the edge that failed and its gRPC code."}, []string{"method", "edge", "code"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "longhaul_pushclient_failovers_total",
			Help: "Attempts sent to another edge after one failed, by the edge that failed and its gRPC code."}, []string{"edge", "code"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "longhaul_pushclient_rate_limited_total",
			Help: "Attempts an edge refused as over this client's rate of insights (RATE_LIMITED), by edge: each is sent to the same edge again after its hint."}, []string{"edge"}),
		callSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "longhaul_pushclient_call_seconds",
			Help: "Time from a call to its success, retries included, by method.", Buckets: buckets}, []string{"method"}),
		attemptSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "longhaul_pushclient_attempt_seconds",
			Help: "Time from an attempt to its acknowledgement, by method and edge.", Buckets: buckets}, []string{"method", "edge"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	m.calls = register(reg, m.calls, &errs)
	m.attempts = register(reg, m.attempts, &errs)
	m.insights = register(reg, m.insights, &errs)
	m.retries = register(reg, m.retries, &errs)
	m.failovers = register(reg, m.failovers, &errs)
	m.rateLimited = register(reg, m.rateLimited, &errs)
	m.callSeconds = register(reg, m.callSeconds, &errs)
	m.attemptSeconds = register(reg, m.attemptSeconds, &errs)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("pushclient: metrics: %w", err)
	}
	return m, nil
}

// register registers c, or returns the collector registered before under
// the same description, so that clients sharing a registerer share it.
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errs *[]error) C {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	if err != nil {
		*errs = append(*errs, err)
	}
	return c
}
