package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestUpgradeHandler: POST /upgrade answers the pid, 409 when refused as
// busy, 500 with the reason; it refuses other methods and what a web
// page could send; RequestUpgrade maps the answers.
func TestUpgradeHandler(t *testing.T) {
	busy := errors.New("upgrade refused")
	var result error
	calls := 0
	srv := httptest.NewServer(UpgradeHandler(func(context.Context) (int, error) {
		calls++
		return 4242, result
	}, busy))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	msg, err := RequestUpgrade(context.Background(), addr)
	if err != nil || msg != "upgraded: pid 4242 serves" {
		t.Fatalf("success: %q, %v", msg, err)
	}
	result = errors.Join(busy, errors.New("an upgrade is already in progress"))
	if _, err := RequestUpgrade(context.Background(), addr); !errors.Is(err, ErrUpgradeFailed) || !strings.Contains(err.Error(), "already in progress") {
		t.Fatalf("busy: %v", err)
	}
	result = errors.New("successor (pid 9) failed: \x1b[31mbad")
	_, err = RequestUpgrade(context.Background(), addr)
	if !errors.Is(err, ErrUpgradeFailed) || strings.Contains(err.Error(), "\x1b") || !strings.Contains(err.Error(), "failed: ") {
		t.Fatalf("failure: %q", err)
	}

	before := calls
	for _, tc := range []struct {
		name, method string
		header       map[string]string
		want         int
	}{
		{"GET", http.MethodGet, nil, http.StatusMethodNotAllowed},
		{"cross-origin", http.MethodPost, map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"form", http.MethodPost, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
		{"cross-site fetch", http.MethodPost, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"rebound name", http.MethodPost, map[string]string{"Host": "evil.example"}, http.StatusForbidden},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+"/upgrade", nil)
		for k, v := range tc.header {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	if calls != before {
		t.Errorf("refused requests started %d upgrade(s)", calls-before)
	}
}
