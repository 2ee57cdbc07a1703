package proxy

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminHandler serves /metrics (Prometheus text format from g), /healthz
// (the process answers) and /readyz (ready reports true: listeners are
// serving). With a reload function it also serves POST /reload, which
// answers 200 once the reload is applied and 500 with the reason when the
// previous configuration stays; the caller decides who may reach it.
func AdminHandler(g prometheus.Gatherer, ready func() bool, reload func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	if reload != nil {
		mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
			if err := reload(r.Context()); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			_, _ = w.Write([]byte("reloaded\n"))
		})
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}
