package proxy

import (
	"context"
	"crypto/x509"
	"log/slog"
	"sync"
	"time"
)

// Expiry warnings: logged once when a certificate comes within each
// threshold of its NotAfter (at load, on reload, and on the periodic
// check of a running group); a certificate already past both at load
// gets one warning.
var expiryThresholds = []time.Duration{30 * 24 * time.Hour, 7 * 24 * time.Hour}

const expiryCheckEvery = time.Minute

// revocationInfo is what a listener's configuration tells the metrics
// and the expiry watch: its keys' leaves and its client check.
type revocationInfo struct {
	leaves map[string]*x509.Certificate // by key name
	check  *clientCheck
}

// expiryWatch remembers which thresholds were already logged, by key.
type expiryWatch struct {
	mu     sync.Mutex
	warned map[string]time.Duration // key name → smallest threshold logged
}

// note sets the expiry and CRL gauges from the running listeners and
// logs a warning for each threshold a certificate crossed since the last
// note.
func (w *expiryWatch) note(m *Metrics, log *slog.Logger, lcs []*ListenerConfig, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.warned == nil {
		w.warned = map[string]time.Duration{}
	}
	m.CertExpiry.Reset()
	m.CRLNextUpdate.Reset()
	seen := map[string]bool{}
	for _, lc := range lcs {
		if lc.revocation == nil {
			continue
		}
		for name, leaf := range lc.revocation.leaves {
			m.CertExpiry.WithLabelValues(name).Set(float64(leaf.NotAfter.Unix()))
			if seen[name] {
				continue
			}
			seen[name] = true
			left := leaf.NotAfter.Sub(now)
			crossed := time.Duration(0) // the tightest threshold crossed
			for _, th := range expiryThresholds {
				if left <= th {
					crossed = th
				}
			}
			if crossed == 0 {
				delete(w.warned, name) // renewed
				continue
			}
			if last, ok := w.warned[name]; ok && last <= crossed {
				continue
			}
			w.warned[name] = crossed
			level := slog.LevelWarn
			if left <= 0 {
				level = slog.LevelError
			}
			log.Log(context.Background(), level, "certificate expires soon: renew it",
				"key", name, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
				"days_left", int(left.Hours()/24))
		}
		if lc.revocation.check != nil {
			for ca, next := range lc.revocation.check.rev.NextUpdates() {
				v := 0.0
				if !next.IsZero() {
					v = float64(next.Unix())
				}
				m.CRLNextUpdate.WithLabelValues(ca).Set(v)
			}
		}
	}
	for name := range w.warned {
		if !seen[name] {
			delete(w.warned, name)
		}
	}
}
