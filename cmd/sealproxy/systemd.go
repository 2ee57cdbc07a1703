package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/sealproxy/sealproxy/internal/atomicfile"
	"github.com/sealproxy/sealproxy/proxy"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault/keyring"
)

// The service manager protocol of systemd (Type=notify-reload): the
// daemon says READY=1 once every key is open and every listener bound,
// STATUS= while it unlocks, RELOADING=1 with MONOTONIC_USEC= then READY=1
// around a reload, STOPPING=1 when it stops, and WATCHDOG=1 every half
// WatchdogSec. Outside systemd (no NOTIFY_SOCKET) all of it is a no-op.

// notifier sends sd_notify messages to NOTIFY_SOCKET.
type notifier struct {
	log *slog.Logger
	// voice, when set, says which messages reach systemd (an upgrade's
	// two processes must not both speak for the unit: a STOPPING=1 from
	// the main process would stop it).
	voice *atomic.Int32
}

// What a process in an upgrade may say.
const (
	voiceAll   int32 = iota
	voiceNone        // a successor before it is the main process; a predecessor that made it the main one
	voiceAlive       // a predecessor that stays the main process while it drains: WATCHDOG=1 and STATUS= only
)

// notify sends the lines as one message.
func (n notifier) notify(lines ...string) {
	if n.voice != nil {
		switch n.voice.Load() {
		case voiceNone:
			return
		case voiceAlive:
			lines = slices.DeleteFunc(slices.Clone(lines), func(l string) bool {
				return l != sddaemon.SdNotifyWatchdog && !strings.HasPrefix(l, "STATUS=")
			})
			if len(lines) == 0 {
				return
			}
		}
	}
	msg := strings.Join(lines, "\n")
	if ok, err := sddaemon.SdNotify(false, msg); err != nil {
		n.log.Warn("telling systemd failed", "err", err, "message", strings.ReplaceAll(msg, "\n", " "))
	} else if ok {
		n.log.Debug("told systemd", "message", strings.ReplaceAll(msg, "\n", " "))
	}
}

// setVoice changes what this process may say; a no-op without one.
func (n notifier) setVoice(v int32) {
	if n.voice != nil {
		n.voice.Store(v)
	}
}

// STATUS= text can hold what a gate or a JWE said (a denial's operator,
// a URL): escaped, so that it stays one printable line and cannot add
// notify assignments of its own.
func (n notifier) ready(status string, extra ...string) {
	n.notify(append([]string{sddaemon.SdNotifyReady, "STATUS=" + keyring.Printable(status)}, extra...)...)
}
func (n notifier) status(s string) { n.notify("STATUS=" + keyring.Printable(s)) }
func (n notifier) stopping() {
	n.notify(sddaemon.SdNotifyStopping, "STATUS=stopping: draining connections")
}

// reloading starts a reload: systemd (notify-reload) wants the monotonic
// time with it, and READY=1 when it is over.
func (n notifier) reloading() {
	lines := []string{sddaemon.SdNotifyReloading, "STATUS=reloading"}
	if usec := strings.TrimSpace(sddaemon.SdNotifyMonotonicUsec()); usec != "" {
		lines = append(lines, usec)
	}
	n.notify(lines...)
}

// watchdog returns a ticker channel for pinging systemd every half
// WATCHDOG_USEC (the unit's WatchdogSec), and its stop function; a nil
// channel when there is no watchdog. The daemon's own loop answers it, so
// a daemon that stops answering signals stops pinging too.
func (n notifier) watchdog() (<-chan time.Time, func()) {
	every, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("ignoring the systemd watchdog", "err", err)
		return nil, func() {}
	}
	if every <= 0 {
		return nil, func() {}
	}
	n.log.Info("systemd watchdog enabled", "interval", every)
	n.notify(sddaemon.SdNotifyWatchdog)
	t := time.NewTicker(every / 2)
	return t.C, t.Stop
}

func (n notifier) ping() { n.notify(sddaemon.SdNotifyWatchdog) }

// systemdPidFile is the unit's PIDFile=, which systemd passes as
// $PIDFILE; empty if none. With one, an upgrade's successor writes its
// pid there and the old process stays the main one until it exits:
// systemd then reads the file and takes the successor, by then its own
// child, for the main process. A MAINPID= naming it while the old
// process lives makes it a main process that is not systemd's child,
// which systemd cannot wait for at stop (docs/upgrade.md).
func systemdPidFile() string {
	if p := os.Getenv("PIDFILE"); filepath.IsAbs(p) {
		return p
	}
	return ""
}

// writePidFile puts this process's pid in path, replacing it whole:
// systemd must never read half of it.
func writePidFile(path string) error {
	return atomicfile.Write(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}

// systemdSockets returns the sockets systemd passed (LISTEN_FDS), by
// FileDescriptorName, and forgets the environment so that child
// processes do not see it.
func systemdSockets() map[string][]*os.File { return activation.FilesWithNames() }

// usesSocket reports whether cfg listens on the passed socket name.
func usesSocket(cfg *config.Config, name string) bool {
	if cfg.Admin.Listen == config.SystemdPrefix+name {
		return true
	}
	for _, l := range cfg.Listeners {
		if l.Listen == config.SystemdPrefix+name {
			return true
		}
	}
	return false
}

// listenFunc opens listen addresses: "systemd:NAME" takes the socket
// systemd passed under that name, anything else is proxy.Listen. Each
// call hands out a duplicate of the passed socket, so that a listener
// closed by a reload can be opened again by a later one.
func listenFunc(sockets map[string][]*os.File) func(addr string) (net.Listener, error) {
	return func(addr string) (net.Listener, error) {
		name, ok := strings.CutPrefix(addr, config.SystemdPrefix)
		if !ok {
			return proxy.Listen(addr)
		}
		files := sockets[name]
		switch len(files) {
		case 0:
			var names []string
			for n := range sockets {
				names = append(names, n)
			}
			slices.Sort(names)
			passed := "none (is the service started through its .socket unit?)"
			if len(names) > 0 {
				passed = strings.Join(names, ", ")
			}
			return nil, fmt.Errorf("listen %s: systemd passed no socket named %q (FileDescriptorName=); it passed: %s", addr, name, passed)
		case 1:
		default:
			return nil, fmt.Errorf("listen %s: systemd passed %d sockets named %q; give each its own FileDescriptorName", addr, len(files), name)
		}
		ln, err := net.FileListener(files[0])
		if err != nil {
			return nil, fmt.Errorf("listen %s: socket from systemd: %w", addr, err)
		}
		return ln, nil
	}
}
