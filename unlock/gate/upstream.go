package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// upstream is a Tang server (tangd) the gate stands in front of: the gate
// holds recoveries and forwards the approved ones; advertisements pass
// through. The upstream must be reachable only through the gate, or hosts
// can simply go around it.
type upstream struct {
	base  string
	err   error
	proxy *httputil.ReverseProxy
	http  *http.Client
}

// maxUpstreamAnswer bounds a forwarded /rec answer: one JWK point.
const maxUpstreamAnswer = 16 << 10

// kidSyntax is a thumbprint: base64url, as long as jose's longest hash.
var kidSyntax = regexp.MustCompile(`^[A-Za-z0-9_-]{1,86}$`)

func newUpstream(raw string, log *slog.Logger) *upstream {
	base, err := tang.BaseURL(raw)
	up := &upstream{base: base, err: err, http: &http.Client{Timeout: 10 * time.Second}}
	if err != nil {
		return up
	}
	target, _ := url.Parse(base)
	up.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.LogAttrs(r.Context(), slog.LevelError, "upstream tang unreachable", slog.String("tang_url", base), slog.Any("err", err))
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	return up
}

// serveAdv passes GET /adv and /adv/{thp} through; nothing else.
func (up *upstream) serveAdv(w http.ResponseWriter, r *http.Request) {
	rest, isAdv := strings.CutPrefix(r.URL.Path, "/adv")
	if r.Method != http.MethodGet || !isAdv || (rest != "" && rest != "/" && !kidSyntax.MatchString(strings.TrimPrefix(rest, "/"))) {
		http.NotFound(w, r)
		return
	}
	if up.err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	up.proxy.ServeHTTP(w, r)
}

// check refuses what cannot be a recovery, before it waits. Which kids
// the upstream has is not known here (rotated keys are not advertised):
// an unknown one is the upstream's 404 after approval.
func (up *upstream) check(kid string, x *tang.JWK) (int, error) {
	if !kidSyntax.MatchString(kid) {
		return http.StatusNotFound, fmt.Errorf("%w %q", tang.ErrUnknownKey, kid)
	}
	if _, err := x.Point(); err != nil {
		return http.StatusBadRequest, err
	}
	return 0, nil
}

// recover forwards an approved recovery and returns the upstream's answer.
func (up *upstream) recover(ctx context.Context, kid string, x *tang.JWK) (int, string, []byte, error) {
	if up.err != nil {
		return http.StatusBadGateway, "", nil, up.err
	}
	body, err := json.Marshal(x)
	if err != nil {
		return http.StatusInternalServerError, "", nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, up.base+"/rec/"+url.PathEscape(kid), bytes.NewReader(body))
	if err != nil {
		return http.StatusInternalServerError, "", nil, err
	}
	req.Header.Set("Content-Type", "application/jwk+json")
	resp, err := up.http.Do(req)
	if err != nil {
		return http.StatusBadGateway, "", nil, fmt.Errorf("upstream tang %s: %w", up.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamAnswer+1))
	if err != nil || len(data) > maxUpstreamAnswer {
		return http.StatusBadGateway, "", nil, fmt.Errorf("upstream tang %s: answer unreadable or too large", up.base)
	}
	if resp.StatusCode == http.StatusAccepted {
		// Another gate holds it: its code and nonce are not this gate's
		// exchange with the host, and must not reach the host as if they were.
		return http.StatusBadGateway, "", nil, fmt.Errorf("upstream tang %s held the recovery (HTTP 202): the upstream must be a plain Tang server, not a gate", up.base)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), data, nil
}
