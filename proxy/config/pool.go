package config

import (
	"fmt"
	"os"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// poolUnavailable refuses [pool] (a variable so that tests on Linux
// check the Windows refusal).
var poolUnavailable = runtime.GOOS == "windows"

// pool validates [pool] and its services, resolving user and group
// names to ids (so a typo fails `sealproxy check`, not a request).
func (v *validator) pool(c *Config, keys map[string]bool) {
	pl := &c.Pool
	pl.GID = -1
	if isZeroPool(pl) {
		return
	}
	if poolUnavailable {
		v.errorf("pool", "the TLS pool is not available on Windows yet (it passes sockets with SCM_RIGHTS, which Windows lacks; see docs/pool.md): remove [pool]")
		return
	}
	switch rest, ok := strings.CutPrefix(pl.Listen, "unix:"); {
	case pl.Listen == "":
		v.errorf("pool.listen", "missing: the pool's unix socket (unix:/run/sealproxy/pool.sock)")
	case !ok || rest == "":
		v.errorf("pool.listen", "%q: the pool listens on a unix socket only (unix:PATH): it receives file descriptors", pl.Listen)
	}
	pl.FileMode = 0o666
	if pl.Mode != "" {
		m, err := strconv.ParseUint(pl.Mode, 8, 32)
		if err != nil || m > 0o777 {
			v.errorf("pool.mode", "%q: want octal permissions such as \"0660\"", pl.Mode)
		}
		pl.FileMode = os.FileMode(m)
	}
	if pl.Group != "" {
		if id, err := lookupID(pl.Group, false); err != nil {
			v.errorf("pool.group", "%v", err)
		} else {
			pl.GID = int(id)
		}
	}
	if pl.MaxConnections < 0 {
		v.errorf("pool.max_connections", "must not be negative")
	} else if pl.MaxConnections == 0 {
		pl.MaxConnections = DefaultPoolMaxConnections
	}
	for _, d := range []struct {
		name string
		val  *time.Duration
		def  time.Duration
	}{
		{"handshake_timeout", &pl.HandshakeTimeout, DefaultHandshakeTimeout},
		{"idle_timeout", &pl.IdleTimeout, DefaultIdleTimeout},
		{"close_timeout", &pl.CloseTimeout, DefaultCloseTimeout},
		{"max_lifetime", &pl.MaxLifetime, 0},
	} {
		if *d.val < 0 {
			v.errorf("pool."+d.name, "must not be negative")
		} else if *d.val == 0 {
			*d.val = d.def
		}
	}
	names := map[string]bool{}
	for i := range pl.Services {
		s := &pl.Services[i]
		p := fmt.Sprintf("pool.service[%d]", i)
		switch {
		case s.Name == "":
			v.errorf(p+".name", "missing: every [[pool.service]] needs a name (applications ask for it)")
		case names[s.Name]:
			v.errorf(p+".name", "duplicate service name %q", s.Name)
		}
		names[s.Name] = true
		v.poolService(c, p, s, keys)
	}
}

func (v *validator) poolService(c *Config, p string, s *PoolService, keys map[string]bool) {
	for _, u := range s.Users {
		if id, err := lookupID(u, true); err != nil {
			v.errorf(p+".users", "%v", err)
		} else {
			s.UIDs = append(s.UIDs, id)
		}
	}
	for _, g := range s.Groups {
		if id, err := lookupID(g, false); err != nil {
			v.errorf(p+".groups", "%v", err)
		} else {
			s.GIDs = append(s.GIDs, id)
		}
	}
	if len(s.Users)+len(s.Groups) == 0 {
		v.warnf(p+".users", "service %q names no users or groups: nobody may use it", s.Name)
	}
	// The tls table is a listener's: validate it as one (same checks,
	// same defaults) and keep only what it says about tls and keys.
	l := Listener{Name: s.Name, Backend: "unix:/pool", TLS: s.TLS}
	sub := validator{file: v.file, loc: v.loc}
	switch s.Role {
	case "server":
		l.Mode, l.Keys = ModeOffload, s.Keys
		if s.CA != "" || s.ServerName != "" || s.Key != "" {
			v.errorf(p+".ca", "ca, server_name and key are for role = \"client\"; a server service presents keys and verifies clients with tls.client_ca")
		}
	case "client":
		l.Mode = ModeOffload
		if len(s.Keys) > 0 {
			v.errorf(p+".keys", "keys is for role = \"server\"; a client service presents at most one certificate: key = \"NAME\"")
		}
		if s.TLS.ClientAuth != "" || s.TLS.ClientCA != "" || len(s.TLS.CRL) > 0 {
			v.errorf(p+".tls.client_auth", "client_auth, client_ca and crl are for role = \"server\"; a client service verifies servers with ca")
		}
		// The allow rules judge the server's certificate here.
		l.TLS.ClientAuth, l.TLS.ClientCA, l.TLS.CRL = "require", "ca", nil
		if s.Key != "" && !keys[s.Key] {
			v.errorf(p+".key", "unknown key %q (no [[key]] has this name)", s.Key)
		}
	case "":
		v.errorf(p+".role", "missing: server (the application accepted the connection) or client (it connected)")
		return
	default:
		v.errorf(p+".role", "unknown role %q (want server or client)", s.Role)
		return
	}
	sub.listener(c, p, &l, keys)
	for _, e := range sub.errs {
		if strings.HasPrefix(e.Path, p+".tls") || (s.Role == "server" && e.Path == p+".keys") {
			if s.Role == "client" && (strings.HasPrefix(e.Path, p+".tls.client_auth") || strings.HasPrefix(e.Path, p+".tls.client_ca")) {
				continue
			}
			v.errs = append(v.errs, e)
		}
	}
	for _, w := range sub.warns {
		if strings.HasPrefix(w.Path, p+".tls") {
			v.warns = append(v.warns, w)
		}
	}
	if s.Role == "client" {
		l.TLS.ClientAuth, l.TLS.ClientCA, l.TLS.CRL = s.TLS.ClientAuth, s.TLS.ClientCA, s.TLS.CRL
	}
	s.TLS = l.TLS
}

// lookupID resolves a user (or group) name or a numeric id.
func lookupID(s string, isUser bool) (uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	kind := "group"
	var id string
	var err error
	if isUser {
		kind = "user"
		var u *user.User
		if u, err = user.Lookup(s); err == nil {
			id = u.Uid
		}
	} else {
		var g *user.Group
		if g, err = user.LookupGroup(s); err == nil {
			id = g.Gid
		}
	}
	if err != nil {
		return 0, fmt.Errorf("unknown %s %q on this system (write a name from /etc/%s or a numeric id)", kind, s, map[bool]string{true: "passwd", false: "group"}[isUser])
	}
	n, err := strconv.ParseUint(id, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s %q has no numeric id (%q)", kind, s, id)
	}
	return uint32(n), nil
}

func isZeroPool(p *Pool) bool {
	return p.Listen == "" && p.Mode == "" && p.Group == "" && p.MaxConnections == 0 && len(p.Services) == 0 &&
		p.HandshakeTimeout == 0 && p.IdleTimeout == 0 && p.CloseTimeout == 0 && p.MaxLifetime == 0
}
