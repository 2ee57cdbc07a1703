package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestParseMode(t *testing.T) {
	for _, s := range []string{"off", "best-effort", "required"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := ParseMode("on"); err == nil {
		t.Error("ParseMode(on): no error")
	}
}

func TestDeniedPath(t *testing.T) {
	p := Policy{Read: []string{"/srv/tls/"}, Write: []string{"/var/log/gate.log"}, Sockets: []string{"/run/sp"}}
	p.Clean()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("reading certificate: %w", &fs.PathError{Op: "open", Path: "/srv/new/a.crt", Err: syscall.EACCES}), "/srv/new/a.crt"},
		{&fs.PathError{Op: "open", Path: "/srv/tls/a.crt", Err: syscall.EACCES}, ""}, // inside: a DAC refusal
		{&fs.PathError{Op: "open", Path: "/srv/tlsx/a.crt", Err: syscall.EACCES}, "/srv/tlsx/a.crt"},
		{&fs.PathError{Op: "open", Path: "/var/log/gate.log", Err: syscall.EPERM}, ""},
		{&fs.PathError{Op: "open", Path: "/srv/new/a.crt", Err: syscall.ENOENT}, ""},
		{errors.New("eacces"), ""},
		{listenErr("/run/new/a.sock", syscall.EACCES), "/run/new/a.sock"},
		{listenErr("/run/sp/a.sock", syscall.EACCES), ""},
		{listenErr("/run/new/a.sock", syscall.EADDRINUSE), ""},
	} {
		got, ok := p.DeniedPath(tc.err)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("DeniedPath(%v) = %q, %v; want %q", tc.err, got, ok, tc.want)
		}
	}
}

func listenErr(path string, errno syscall.Errno) error {
	return fmt.Errorf("listener \"x\": %w", &net.OpError{Op: "listen", Net: "unix",
		Addr: &net.UnixAddr{Name: path, Net: "unix"}, Err: os.NewSyscallError("bind", errno)})
}

func TestCleanAndAdd(t *testing.T) {
	p := Policy{Read: []string{"/b", "/a/../b", "/a"}}
	p.Add(Policy{Write: []string{"/w"}, Sockets: []string{"/s", "/s/"}})
	p.Clean()
	// Clean makes paths absolute: on Windows "/a" becomes "C:\\a".
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	want := fmt.Sprint([]string{abs("/a"), abs("/b")}, []string{abs("/w")}, []string{abs("/s")})
	if got := fmt.Sprint(p.Read, p.Write, p.Sockets); got != want {
		t.Errorf("cleaned policy %s, want %s", got, want)
	}
}

func TestApplyOff(t *testing.T) {
	// Off applies nothing, here or anywhere: the test process stays free.
	res, err := Apply(Policy{}, Off)
	if err != nil || res.Enforced {
		t.Fatalf("Apply(off) = %+v, %v", res, err)
	}
	if _, err := os.ReadDir(filepath.Dir(os.Args[0])); err != nil {
		t.Fatal(err)
	}
}
