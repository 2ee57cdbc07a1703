package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"
)

// FuzzClientAnswer gives the operator client (seal pending/approve/deny)
// an arbitrary status and body from the gate. Properties: no panic; it
// succeeds only on 200 with JSON of the right shape, and what it returns
// survives a JSON round trip unchanged; any other status is an *APIError
// with that status that unwraps to the sentinel for 401, 404 and 409.
func FuzzClientAnswer(f *testing.F) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	pending, _ := json.Marshal(struct {
		Requests []Request `json:"requests"`
	}{[]Request{{Code: "ABCD-EFGH", State: StatePending, Session: true, Host: "web-1", Source: "10.0.0.1", Kids: []string{"k1"}, Keys: 2, Arrived: 1, Created: now, Expires: now.Add(time.Minute)}}})
	decision, _ := json.Marshal(Decision{Code: "ABCD-EFGH", Status: StateApproved, Operator: "alice", Time: now, Approvals: 1, Needed: 2})
	for _, c := range []struct {
		status int
		body   []byte
	}{
		{200, pending}, {200, decision}, {200, []byte(`{"requests":[]}`)}, {200, []byte(`{"requests":null}`)},
		{200, []byte(`{"requests":[{"state":"maybe"}]}`)}, {200, []byte(`{"status":7}`)}, {200, []byte(`[]`)},
		{200, []byte(`{"time":"yesterday"}`)}, {200, []byte(``)},
		{401, []byte(`{"error":"unauthorized"}`)}, {404, []byte(`{"error":"no pending request with code ABCD-EFGH"}`)},
		{409, []byte(`{"error":"not pending"}`)}, {413, []byte(`{"error":""}`)}, {500, []byte(`oops`)},
		{302, nil}, {204, nil},
	} {
		f.Add(c.status, c.body, false)
		f.Add(c.status, c.body, true)
	}
	f.Fuzz(func(t *testing.T, status int, body []byte, decide bool) {
		if status < 100 || status > 999 {
			return // not a status line net/http would pass on
		}
		c := &Client{URL: "http://gate.test", Token: "sgt_x", HTTP: &http.Client{Transport: answer{status, body}}}
		var (
			got any
			err error
		)
		if decide {
			var d *Decision
			d, err = c.Approve(context.Background(), "ABCD-EFGH")
			got = d
		} else {
			var reqs []Request
			reqs, err = c.Pending(context.Background())
			got = reqs
		}
		if status != http.StatusOK {
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != status || ae.URL != "http://gate.test" {
				t.Fatalf("status %d: error %v", status, err)
			}
			want := map[int]error{401: ErrUnauthorized, 404: ErrUnknownCode, 409: ErrNotPending}[status]
			if want != nil && !errors.Is(err, want) {
				t.Fatalf("status %d: %v is not %v", status, err, want)
			}
			return
		}
		if err != nil {
			var ae *APIError
			if errors.As(err, &ae) {
				t.Fatalf("status 200 gave an APIError %v", err)
			}
			return
		}
		out, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("marshalling %+v: %v", got, err)
		}
		again := reflect.New(reflect.TypeOf(got))
		if err := json.Unmarshal(out, again.Interface()); err != nil {
			t.Fatalf("re-reading %s: %v", out, err)
		}
		if out2, _ := json.Marshal(again.Elem().Interface()); !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the answer:\n%s\n%s", out, out2)
		}
	})
}

// answer is a gate that answers every request with one status and body.
type answer struct {
	status int
	body   []byte
}

func (a answer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return &http.Response{StatusCode: a.status, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(a.body)), Request: r}, nil
}
