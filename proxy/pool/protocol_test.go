package pool

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	r, err := ParseRequest([]byte(`{"v":1,"service":"web","server_name":"host.example","alpn":["h2","http/1.1"]}` + "\n"))
	if err != nil || r.Service != "web" || r.ServerName != "host.example" || len(r.ALPN) != 2 {
		t.Fatalf("%+v, %v", r, err)
	}
	for _, bad := range []string{
		`{"v":1,"service":"web"}`,           // no newline
		`{"v":1,"service":"web"}` + "\n\n",  // two lines
		`{"v":1,"service":"web"} {}` + "\n", // two values
		`{"v":1,"service":"web"}x` + "\n",   // trailing garbage
		`[1]` + "\n",                        // not an object
		`{"v":1}` + "\n",                    // no service
		`{"v":"1","service":"web"}` + "\n",  // wrong type
		`{"v":1,"Service":"web"}` + "\n",    // field names are exact
		`{"v":1,"service":"a","service":"b"}` + "\n",
		`{"v":1,"service":"web\u0000x"}` + "\n", // not printable
		`{"v":1,"service":"w\u00e9b"}` + "\n",
		`{"v":1,"service":"web","alpn":[""]}` + "\n",
		`{"v":1,"service":"web","alpn":[` + strings.Repeat(`"a",`, 16) + `"a"]}` + "\n",
		"{\"v\":1,\"service\":\"\xff\"}\n",
		`{"v":1,"service":"` + strings.Repeat("a", MaxRequest) + `"}` + "\n",
	} {
		if _, err := ParseRequest([]byte(bad)); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%.60q: %v, want ErrBadRequest", bad, err)
		}
	}
}

// FuzzParseRequest: the parser never panics; what it accepts is within
// the documented bounds, and encodes back to a request it accepts
// identically (one meaning per line).
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"v":1,"service":"web","server_name":"host.example","alpn":["h2","http/1.1"]}` + "\n"))
	f.Add([]byte(`{"v":1,"service":"web"}` + "\n"))
	f.Add([]byte(`{"v":1,"service":"a","service":"b"}` + "\n"))
	f.Add([]byte(`{"v":1,"service":"web","alpn":null}` + "\n"))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ParseRequest(line)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if len(line) > MaxRequest || r.V != Version || !printable(r.Service, 255) || len(r.ALPN) > 16 {
			t.Fatalf("accepted out of bounds: %+v", r)
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseRequest(append(again, '\n'))
		if err != nil || r2.Service != r.Service || r2.ServerName != r.ServerName || len(r2.ALPN) != len(r.ALPN) {
			t.Fatalf("re-encoded %s: %+v, %v", again, r2, err)
		}
	})
}
