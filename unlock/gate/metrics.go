package gate

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the gate's Prometheus collectors, served at GET
// /gate/metrics to a metrics credential (RoleMetrics, as Prometheus's
// authorization.credentials can send it) or an operator.
type metrics struct {
	reg      *prometheus.Registry
	requests prometheus.Counter
	decided  *prometheus.CounterVec // decision, by
	expired  *prometheus.CounterVec // state
	refused  prometheus.Counter
	unheld   prometheus.Counter
	// abandoned counts recoveries whose client left before the exchange.
	abandoned prometheus.Counter
	// suppressed counts audit lines not written one by one (noisy.go).
	suppressed prometheus.Counter
	latency    *prometheus.HistogramVec // decision
}

func newMetrics(g *Gate) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sealgate_requests_total", Help: "Requests (recoveries or sessions) that began to wait for a decision.",
		}),
		decided: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealgate_decisions_total", Help: "Decisions, by decision (approved, denied) and by whom (operator, policy).",
		}, []string{"decision", "by"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealgate_expired_total", Help: "Requests that lapsed, by state (pending, approved and unused).",
		}, []string{"state"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sealgate_refused_total", Help: "Recoveries refused before they could wait (too many pending, session conflicts).",
		}),
		unheld: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sealgate_unheld_total", Help: "Pending recoveries answered 202 at once because too many requests were held open (per source, or in all).",
		}),
		abandoned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sealgate_abandoned_total", Help: "Recoveries whose client went away before they were answered; the gate skipped or discarded their exchange.",
		}),
		suppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sealgate_audit_suppressed_total", Help: "Unauthorized calls and refused recoveries past a source's burst, audited as one summary line per minute instead of one line each.",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sealgate_decision_seconds", Help: "Time from a request's arrival to its decision.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800},
		}, []string{"decision"}),
	}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sealgate_requests_pending", Help: "Requests waiting for a decision now.",
	}, func() float64 { return float64(len(g.Pending())) })
	held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sealgate_requests_held", Help: "POST /rec requests held open now, waiting for a decision.",
	}, func() float64 {
		g.mu.Lock()
		defer g.mu.Unlock()
		return float64(g.heldAll)
	})
	m.reg.MustRegister(m.requests, m.decided, m.expired, m.refused, m.unheld, m.abandoned, m.suppressed, m.latency, pending, held)
	return m
}

func (m *metrics) decision(r *request, to State, operator string, now time.Time) {
	by := "operator"
	if strings.HasPrefix(operator, "policy:") {
		by = "policy"
	}
	m.decided.WithLabelValues(string(to), by).Inc()
	m.latency.WithLabelValues(string(to)).Observe(now.Sub(r.created).Seconds())
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
