package proxy

import (
	"bytes"
	"net"
	"strings"
	"testing"
)

// FuzzParseConnect feeds arbitrary request bytes and allow-lists (comma
// separated) to the CONNECT parser. Properties: it never panics; it
// accepts only a destination that an independent reading of the
// allow-list (host:port, *.domain for one label, port *, DNS names
// compared in ASCII case, RFC 4343) allows; early bytes are exactly what
// follows the first empty line, so a suffix of the input; a refusal
// carries one of the statuses readConnect answers with.
func FuzzParseConnect(f *testing.F) {
	allow := "backend.internal:443,*.svc.test:*,127.0.0.1:8080,[::1]:22"
	for _, req := range []string{
		"CONNECT backend.internal:443 HTTP/1.1\r\nHost: backend.internal:443\r\n\r\n",
		"CONNECT db.svc.test:5432 HTTP/1.1\r\n\r\nearly bytes",
		"CONNECT 127.0.0.1:8080 HTTP/1.0\r\nProxy-Authorization: Basic eDp5\r\n\r\n\x16\x03\x01",
		"CONNECT [::1]:22 HTTP/1.1\r\n\r\nSSH-2.0-x\r\n",
		"CONNECT backend.internal:444 HTTP/1.1\r\n\r\n",
		"CONNECT a.b.svc.test:1 HTTP/1.1\r\n\r\n",
		"CONNECT svc.test:1 HTTP/1.1\r\n\r\n",
		"CONNECT BACKEND.INTERNAL:443 HTTP/1.1\r\n\r\n",
		"CONNECT backend.\u0130nternal:443 HTTP/1.1\r\n\r\n",
		"CONNECT x.svc.te\u212at:443 HTTP/1.1\r\n\r\n",
		"CONNECT backend.internal.:443 HTTP/1.1\r\n\r\n",
		"CONNECT backend.internal:0443 HTTP/1.1\r\n\r\n",
		"CONNECT x.svc.test: HTTP/1.1\r\n\r\n",
		"CONNECT :443 HTTP/1.1\r\n\r\n",
		"CONNECT backend.internal:443  HTTP/1.1\r\n\r\n",
		"CONNECT  backend.internal:443 HTTP/1.1\r\n\r\n",
		"connect backend.internal:443 HTTP/1.1\r\n\r\n",
		"GET http://backend.internal/ HTTP/1.1\r\n\r\n",
		"CONNECT backend.internal:443 HTTP/2\r\n\r\n",
		"CONNECT backend.internal:443 HTTP/1.1\n\n",
		"CONNECT backend.internal:443 HTTP/1.1\r\n",
		"CONNECT backend.internal:443 HTTP/1.1\r\n\r\n\r\n\r\n",
		"\r\n\r\n",
		"",
	} {
		f.Add(allow, []byte(req))
	}
	f.Add("*:*", []byte("CONNECT anything:1 HTTP/1.1\r\n\r\n"))
	f.Add("", []byte("CONNECT backend.internal:443 HTTP/1.1\r\n\r\n"))
	f.Add("*.:*", []byte("CONNECT a.:1 HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, allowList string, req []byte) {
		var allow []string
		if allowList != "" {
			allow = strings.Split(allowList, ",")
		}
		in := bytes.Clone(req)
		dest, early, status, err := parseConnect(allow, req)
		if !bytes.Equal(in, req) {
			t.Fatalf("parseConnect changed its input")
		}
		if err != nil {
			switch status {
			case "400 Bad Request", "403 Forbidden", "405 Method Not Allowed":
			default:
				t.Fatalf("refused %q with status %q", req, status)
			}
			if dest != "" || early != nil {
				t.Fatalf("refused %q but returned dest %q early %q", req, dest, early)
			}
			return
		}
		if status != "" {
			t.Fatalf("accepted %q with status %q", req, status)
		}
		if !oracleAllowed(allow, dest) {
			t.Fatalf("accepted CONNECT to %q, which allow-list %q does not allow", dest, allow)
		}
		end := bytes.Index(req, []byte("\r\n\r\n"))
		if end < 0 {
			t.Fatalf("accepted %q without an end of header", req)
		}
		line, _, _ := bytes.Cut(req[:end], []byte("\r\n"))
		if want := "CONNECT " + dest + " HTTP/1."; !strings.HasPrefix(string(line), want) {
			t.Fatalf("dest %q is not the request line's target: %q", dest, line)
		}
		rest := req[end+4:]
		switch {
		case len(rest) == 0 && early != nil:
			t.Fatalf("early %q for a request with nothing after the header", early)
		case len(rest) > 0 && !bytes.Equal(early, rest):
			t.Fatalf("early %q, want %q", early, rest)
		case !bytes.HasSuffix(req, early):
			t.Fatalf("early %q is not a suffix of the request", early)
		}
	})
}

// oracleAllowed is connectAllowed written again from the documented
// rules, comparing names in ASCII case only as DNS does.
func oracleAllowed(allow []string, dest string) bool {
	i := strings.LastIndexByte(dest, ':')
	if i < 0 {
		return false
	}
	host, port := dest[:i], dest[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	} else if strings.ContainsAny(host, "[]:") {
		return false
	}
	if host == "" {
		return false
	}
	for _, p := range allow {
		ph, pp, err := net.SplitHostPort(p)
		if err != nil || (pp != "*" && pp != port) {
			continue
		}
		if rest, ok := strings.CutPrefix(ph, "*."); ok {
			_, hostRest, ok := strings.Cut(host, ".")
			if ok && foldASCII(hostRest) == foldASCII(rest) {
				return true
			}
			continue
		}
		if foldASCII(ph) == foldASCII(host) {
			return true
		}
	}
	return false
}

func foldASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
