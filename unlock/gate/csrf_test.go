package gate_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/unlock/gate"
)

// TestOperatorCrossSite: with a valid token, a call that changes state is
// refused when it is not application/json (what a no-cors fetch or a
// form can send) or when the browser marks it as coming from another
// origin; nothing is decided, and the audit log names whose credential
// was used. The same call from the gate's own origin, or from a client
// that is no browser, decides.
func TestOperatorCrossSite(t *testing.T) {
	f := newFixture(t, nil)
	kid, b := f.blind(t)
	f.postPoint(t, kid, b, nil)
	// A stock client's request (no committed exchange) is approved by id.
	body := []byte(`{"id":"` + f.g.Pending()[0].ID + `"}`)
	auth := "Bearer " + f.Token
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"text/plain", map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
		{"no content type", map[string]string{}, http.StatusUnsupportedMediaType},
		{"a form", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
		{"cross-site", map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"same-site, another origin", map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"}, http.StatusForbidden},
		{"foreign Origin", map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}, http.StatusForbidden},
		{"another port's Origin", map[string]string{"Content-Type": "application/json", "Origin": "http://127.0.0.1:1"}, http.StatusForbidden},
		{"Origin null", map[string]string{"Content-Type": "application/json", "Origin": "null"}, http.StatusForbidden},
		{"text/plain cross-site", map[string]string{"Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
	} {
		for _, path := range []string{"/gate/approve", "/gate/deny"} {
			tc.hdr["Authorization"] = auth
			status, answer := f.post(t, path, body, tc.hdr)
			if status != tc.want {
				t.Errorf("%s to %s: %d %s, want %d", tc.name, path, status, answer, tc.want)
			}
		}
	}
	if list := f.g.Pending(); len(list) != 1 || list[0].State != gate.StatePending {
		t.Fatalf("after refused calls: %+v", list)
	}
	f.wantEvents(t, "cross-site:POST /gate/approve: Content-Type must be application/json",
		"cross-site:POST /gate/approve: cross-origin request refused: decide from the gate's own page, seal approve or seal deny")
	for _, e := range f.auditEvents(t) {
		if e.Event == "cross-site" && e.Operator != "alice" {
			t.Fatalf("cross-site event does not name the credential's owner: %+v", e)
		}
	}

	// The gate's own page: same origin, JSON.
	status, answer := f.post(t, "/gate/approve", body, map[string]string{
		"Authorization": auth, "Content-Type": "application/json; charset=utf-8",
		"Origin": f.URL, "Sec-Fetch-Site": "same-origin",
	})
	if status != http.StatusOK {
		t.Fatalf("same-origin approve: %d %s", status, answer)
	}
	// Reading is not refused: a page cannot read another origin's answer.
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, f.URL+"/gate/pending", nil)
	req.Header.Set("Authorization", auth)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /gate/pending marked cross-site: %d", resp.StatusCode)
	}
}

// TestMetricsRole: a credential added with the metrics role reads
// /gate/metrics and nothing else: listing, approving and denying are 403
// (audited), while an operator's token still does all of them.
func TestMetricsRole(t *testing.T) {
	f := newFixture(t, nil)
	prom, err := f.Ops.AddRole("prom", gate.RoleMetrics)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Ops.AddRole("x", "admin"); err == nil || !strings.Contains(err.Error(), `roles are "operator" and "metrics", not "admin"`) {
		t.Fatalf("unknown role: %v", err)
	}
	kid, b := f.blind(t)
	_, st := f.postPoint(t, kid, b, nil)
	get := func(token, path string) (int, string) {
		req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, f.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	if status, body := get(prom, "/gate/metrics"); status != http.StatusOK || !strings.Contains(body, "sealgate_requests_pending 1") {
		t.Fatalf("metrics with the metrics token: %d %.200s", status, body)
	}
	if status, body := get(prom, "/gate/pending"); status != http.StatusForbidden || strings.Contains(body, st.Code) ||
		!strings.Contains(body, "forbidden: prom has the metrics role, which reads /gate/metrics only") {
		t.Fatalf("pending with the metrics token: %d %s", status, body)
	}
	for _, path := range []string{"/gate/approve", "/gate/deny"} {
		status, body := f.post(t, path, []byte(`{"code":"`+st.Code+`"}`), map[string]string{"Authorization": "Bearer " + prom, "Content-Type": "application/json"})
		if status != http.StatusForbidden {
			t.Fatalf("%s with the metrics token: %d %s", path, status, body)
		}
	}
	if list := f.g.Pending(); len(list) != 1 || list[0].State != gate.StatePending {
		t.Fatalf("the metrics token decided: %+v", list)
	}
	f.wantEvents(t, "forbidden:GET /gate/pending", "forbidden:POST /gate/approve", "forbidden:POST /gate/deny")

	if status, _ := get(f.Token, "/gate/metrics"); status != http.StatusOK {
		t.Fatalf("metrics with an operator token: %d", status)
	}
	if _, err := f.Operator(f.Token).Pending(testCtx(t)); err != nil {
		t.Fatalf("pending with an operator token: %v", err)
	}
	if d, err := f.Operator(f.Token).ApproveID(testCtx(t), f.g.Pending()[0].ID); err != nil || d.Operator != "alice" {
		t.Fatalf("approve with an operator token: %+v %v", d, err)
	}
	roles, err := f.Ops.Roles()
	if err != nil || roles["alice"] != gate.RoleOperator || roles["prom"] != gate.RoleMetrics {
		t.Fatalf("Roles() = %v, %v", roles, err)
	}
}
