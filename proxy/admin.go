package proxy

import (
	"context"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminHandler serves /metrics (Prometheus text format from g), /healthz
// (the process answers) and /readyz (ready reports true: listeners are
// serving). With a reload function it also serves POST /reload, which
// answers 200 once the reload is applied and 500 with the reason when the
// previous configuration stays; the caller decides who may reach it.
// POST /reload refuses what a web page could send through a browser on
// the host (see sameHostRequest).
func AdminHandler(g prometheus.Gatherer, ready func() bool, reload func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	if reload != nil {
		mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
			if code, why := sameHostRequest(r); code != 0 {
				http.Error(w, why, code)
				return
			}
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

// sameHostRequest checks that a state-changing admin request comes from
// a program on the host, not from a web page a browser on the host
// opened. It returns 0, or the status and reason to refuse it with.
//
//   - Host must name the admin listener itself: its own IP literal or
//     "localhost", with its port. A page that rebinds its own name to
//     127.0.0.1 (DNS rebinding) sends its own name. A unix socket is out
//     of a browser's reach, so its Host is not checked.
//   - A browser adds Origin to every POST and Sec-Fetch-Site to every
//     request: an Origin other than the admin listener's own, or a
//     request marked cross-site or same-site (another port of
//     localhost), is refused.
//   - The bodies a page can post without a CORS preflight (forms,
//     text/plain) are refused; curl -X POST sends no body and no type.
//
// A custom header is not required: it would break `curl -X POST`, and
// every browser that could reach the listener sends Origin.
func sameHostRequest(r *http.Request) (int, string) {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	switch la := local.(type) {
	case *net.UnixAddr:
	case *net.TCPAddr:
		if !hostNamesListener(r.Host, la) {
			return http.StatusForbidden, fmt.Sprintf("refused: Host %q is not this admin listener (%s or localhost:%d)", r.Host, la, la.Port)
		}
	default:
		return http.StatusForbidden, "refused: not received on the admin listener"
	}
	if o := r.Header.Get("Origin"); o != "" && !strings.EqualFold(o, "http://"+r.Host) {
		return http.StatusForbidden, fmt.Sprintf("refused: cross-origin request from %q", o)
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return http.StatusForbidden, fmt.Sprintf("refused: Sec-Fetch-Site %q (a web page's request)", s)
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt == "application/x-www-form-urlencoded" || mt == "multipart/form-data" || mt == "text/plain" {
			return http.StatusUnsupportedMediaType, fmt.Sprintf("refused: Content-Type %q is what a web form sends; POST /reload takes no body", ct)
		}
	}
	return 0, ""
}

// hostNamesListener reports whether a Host header names the TCP address
// la: its IP literal or "localhost", and its port (the port may be left
// out only when it is 80).
func hostNamesListener(host string, la *net.TCPAddr) bool {
	name, port, err := net.SplitHostPort(host)
	if err != nil {
		name, port = host, "80"
	}
	if port != fmt.Sprint(la.Port) {
		return false
	}
	if strings.EqualFold(name, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(name)
	want, ok := netip.AddrFromSlice(la.IP)
	return err == nil && ok && ip.Unmap() == want.Unmap() && ip.Zone() == ""
}
