package proxy

import (
	"crypto"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the proxy's Prometheus collectors.
type Metrics struct {
	Accepted         *prometheus.CounterVec   // listener
	Active           *prometheus.GaugeVec     // listener
	Rejected         *prometheus.CounterVec   // listener, reason
	HandshakeErrors  *prometheus.CounterVec   // listener, kind
	HandshakeSeconds *prometheus.HistogramVec // listener
	BytesIn          *prometheus.CounterVec   // listener: client → backend
	BytesOut         *prometheus.CounterVec   // listener: backend → client
	BackendErrors    *prometheus.CounterVec   // listener, backend
	Closed           *prometheus.CounterVec   // listener, reason
	Reloads          *prometheus.CounterVec   // result
	SignSeconds      *prometheus.HistogramVec // key

	// Revocation and expiry (issue 14).
	RevocationEvents *prometheus.CounterVec // listener, event
	CertExpiry       *prometheus.GaugeVec   // key
	CRLNextUpdate    *prometheus.GaugeVec   // ca
	// ACMERenewals counts ACME issue and renewal attempts by key and
	// result (success, tang_unreachable, ca_error, write_error,
	// swap_error, error).
	ACMERenewals *prometheus.CounterVec
	// PoolRequests counts TLS pool requests by service and result ("ok"
	// or a failure reason); requests naming no known service count under
	// service "".
	PoolRequests *prometheus.CounterVec // service, result
}

// NewMetrics makes the collectors and registers them with reg (nil: not
// registered, as in tests that only read them).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealproxy_connections_accepted_total", Help: "Connections accepted.",
		}, []string{"listener"}),
		Active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sealproxy_connections_active", Help: "Connections open now.",
		}, []string{"listener"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealproxy_connections_rejected_total", Help: "Connections refused, by reason.",
		}, []string{"listener", "reason"}),
		HandshakeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealproxy_handshake_errors_total", Help: "Failed client TLS handshakes, by kind.",
		}, []string{"listener", "kind"}),
		HandshakeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sealproxy_handshake_duration_seconds", Help: "Duration of successful client TLS handshakes.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"listener"}),
		BytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealproxy_bytes_in_total", Help: "Bytes relayed from clients to backends.",
		}, []string{"listener"}),
		BytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealproxy_bytes_out_total", Help: "Bytes relayed from backends to clients.",
		}, []string{"listener"}),
		BackendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealproxy_backend_dial_errors_total", Help: "Failed backend connections (dial or upstream TLS).",
		}, []string{"listener", "backend"}),
		Closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealproxy_connections_closed_total", Help: "Connections closed, by reason.",
		}, []string{"listener", "reason"}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealproxy_reloads_total", Help: "Configuration reloads, by result.",
		}, []string{"result"}),
		SignSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sealproxy_key_sign_duration_seconds", Help: "Duration of private key signatures (handshakes), by key.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}, []string{"key"}),
	}
	m.PoolRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sealproxy_pool_requests_total", Help: "TLS pool requests, by service and result (ok or the failure reason).",
	}, []string{"service", "result"})
	m.RevocationEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sealproxy_revocation_events_total",
		Help: "Client certificate revocation checks that could not be completed or refused, and CRL refreshes that failed, by event.",
	}, []string{"listener", "event"})
	m.CertExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sealproxy_certificate_expiry_timestamp_seconds", Help: "NotAfter of each key's certificate, as a Unix time.",
	}, []string{"key"})
	m.CRLNextUpdate = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sealproxy_crl_next_update_timestamp_seconds", Help: "NextUpdate of the CRL in use for each client CA, as a Unix time (0: none).",
	}, []string{"ca"})
	if reg != nil {
		reg.MustRegister(m.Accepted, m.Active, m.Rejected, m.HandshakeErrors, m.HandshakeSeconds,
			m.BytesIn, m.BytesOut, m.BackendErrors, m.Closed, m.Reloads, m.SignSeconds,
			m.RevocationEvents, m.CertExpiry, m.CRLNextUpdate)
		reg.MustRegister(m.PoolRequests)
	}
	m.ACMERenewals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sealproxy_acme_renewals_total", Help: "ACME certificate issue and renewal attempts, by key and result.",
	}, []string{"key", "result"})
	if reg != nil {
		reg.MustRegister(m.ACMERenewals)
	}
	return m
}

// listenerMetrics caches one listener's children: the hot path adds to
// counters without label lookups.
type listenerMetrics struct {
	accepted, bytesIn, bytesOut prometheus.Counter
	active                      prometheus.Gauge
	handshake                   prometheus.Observer
}

func (m *Metrics) forListener(name string) *listenerMetrics {
	return &listenerMetrics{
		accepted:  m.Accepted.WithLabelValues(name),
		bytesIn:   m.BytesIn.WithLabelValues(name),
		bytesOut:  m.BytesOut.WithLabelValues(name),
		active:    m.Active.WithLabelValues(name),
		handshake: m.HandshakeSeconds.WithLabelValues(name),
	}
}

// InstrumentSigner times every signature of key (named name in the
// metric). RSA keys stay crypto.Decrypters.
func (m *Metrics) InstrumentSigner(name string, key crypto.Signer) crypto.Signer {
	t := timedSigner{Signer: key, obs: m.SignSeconds.WithLabelValues(name)}
	if d, ok := key.(crypto.Decrypter); ok {
		return timedDecrypter{t, d}
	}
	return t
}

type timedSigner struct {
	crypto.Signer
	obs prometheus.Observer
}

func (t timedSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	start := time.Now()
	sig, err := t.Signer.Sign(rand, digest, opts)
	t.obs.Observe(time.Since(start).Seconds())
	return sig, err
}

type timedDecrypter struct {
	timedSigner
	d crypto.Decrypter
}

func (t timedDecrypter) Decrypt(rand io.Reader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	return t.d.Decrypt(rand, msg, opts)
}
