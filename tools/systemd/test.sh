#!/usr/bin/env bash
# tools/systemd/test.sh DEB: boots systemd as PID 1 in systemd-nspawn on
# the host's own root (a volatile overlay: nothing is written to the host),
# with a private network, installs DEB with dpkg -i and drives the real
# units with systemctl: sealgate as a service, sealproxy held by the gate
# (STATUS shows the approval code) then approved with seal approve, a TLS
# round trip through the socket-activated :443, a good reload and a broken
# one (systemctl reload must fail), an upgrade (SIGUSR2: new MAINPID), a clean stop, a start by traffic on
# the socket, the watchdog, and the refusal under LimitMEMLOCK=32K.
#
# Needs root and systemd-nspawn (Debian systemd-container). Without them it
# skips, except with CI=true or SEALPROXY_REQUIRE_INTEROP=1, where it fails.
# Run by `make test-systemd` (docs/systemd.md).
set -euo pipefail

required() { [ "${CI:-}" = true ] || [ "${SEALPROXY_REQUIRE_INTEROP:-}" = 1 ]; }
unavailable() {
	if required; then
		echo "test-systemd: error: $* (CI=true or SEALPROXY_REQUIRE_INTEROP=1: not skipping)" >&2
		exit 1
	fi
	echo "test-systemd: SKIP: $*" >&2
	exit 0
}

deb=${1:?usage: tools/systemd/test.sh DEB}
deb=$(realpath "$deb")
[ "$(id -u)" = 0 ] || unavailable "needs root to run systemd-nspawn"
for tool in systemd-nspawn nsenter mount umount curl openssl socat; do
	command -v "$tool" >/dev/null || unavailable "$tool is not installed (apt-get install systemd-container curl openssl socat)"
done
[ -x /lib/systemd/systemd ] || unavailable "systemd is not installed on this root"

started=$SECONDS
work=$(mktemp -d /tmp/sealproxy-nspawn.XXXXXX)
root=$work/root
share=$work/share
mkdir -p "$root" "$share"
nspawn_pid=
pid1=
passed=0

# Everything the test changed goes with the container: the overlay is a
# tmpfs, the bind mount of / is undone, the directory removed.
cleanup() {
	local rc=$?
	set +e
	if [ $rc -ne 0 ] && [ -n "$pid1" ] && kill -0 "$pid1" 2>/dev/null; then
		echo "--- the container's journal (sealproxy, sealgate), last 60 lines:" >&2
		inside journalctl --no-pager -n 60 -u sealproxy.service -u sealgate.service -u sealproxy-web.socket >&2
	fi
	if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
		kill -TERM "$nspawn_pid" # nspawn asks the container's systemd to power off
		for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$nspawn_pid" 2>/dev/null
		wait "$nspawn_pid" 2>/dev/null
	fi
	# Killing the namespace's init ends every process left in it.
	[ -n "$pid1" ] && kill -KILL "$pid1" 2>/dev/null
	if mountpoint -q "$root"; then
		umount "$root" || umount -l "$root"
	fi
	rm -rf "$work"
	echo "test-systemd: $((SECONDS - started))s"
	if [ $rc -eq 0 ]; then
		echo "systemd: $passed passed, 0 failed"
	else
		echo "systemd: $passed passed, 1 failed" >&2
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

fail() { echo "test-systemd: FAIL: $*" >&2; exit 1; }
ok() { passed=$((passed + 1)); echo "ok $passed - $* ($((SECONDS - started))s)"; }

# inside runs a command in the container, as root, with a clean
# environment.
inside() {
	nsenter -t "$pid1" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
# put FILE writes its standard input to FILE inside the container.
put() { inside sh -c 'mkdir -p "$(dirname "$1")" && cat > "$1"' sh "$1"; }
# until_true SECONDS CMD... retries CMD every 0.2s.
until_true() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.2
	done
}
show() { inside systemctl show -p "$2" --value "$1"; }
# has UNIT PROPERTY VALUE: the unit's property has that value now.
has() { [ "$(show "$1" "$2")" = "$3" ]; }

# The host's enabled daemons stay off in the container.
masks=()
for unit in /etc/systemd/system/*.wants/*; do
	[ -e "$unit" ] || [ -L "$unit" ] || continue
	masks+=("systemd.mask=$(basename "$unit")")
done

cp "$deb" "$share/sealproxy.deb"
mount --bind / "$root"
systemd-nspawn -D "$root" --volatile=overlay -b --quiet --console=passive \
	--register=no --keep-unit --private-network \
	--capability=CAP_IPC_LOCK \
	--system-call-filter='landlock_create_ruleset landlock_add_rule landlock_restrict_self' \
	--bind-ro="$share:/mnt/sealproxy-test" \
	"${masks[@]}" </dev/null >"$work/nspawn.log" 2>&1 &
nspawn_pid=$!

# The container's PID 1: a descendant of nspawn whose PID in its own
# namespace is 1.
find_pid1() {
	local s p
	for s in /proc/[0-9]*/status; do
		p=${s#/proc/}
		p=${p%/status}
		if grep -qE $'^NSpid:\t[0-9]+\t1$' "$s" 2>/dev/null; then
			local a=$p
			while [ "$a" -gt 1 ]; do
				[ "$a" = "$nspawn_pid" ] && { echo "$p"; return 0; }
				a=$(awk '/^PPid:/ {print $2}' "/proc/$a/status" 2>/dev/null) || break
				[ -n "$a" ] || break
			done
		fi
	done
	return 1
}
deadline=$((SECONDS + 30))
until pid1=$(find_pid1); do
	kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/nspawn.log" >&2; fail "systemd-nspawn exited"; }
	[ $SECONDS -lt $deadline ] || fail "no container PID 1 after 30s"
	sleep 0.1
done
state=$(inside timeout 60 systemctl is-system-running --wait || true)
case $state in
running) ;;
degraded) echo "# degraded boot; failed units: $(inside systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')" ;;
*) fail "systemd did not finish booting: $state" ;;
esac
[ "$(inside cat /proc/1/comm)" = systemd ] || fail "PID 1 inside the container is not systemd"
ok "systemd $(inside systemctl --version | awk 'NR==1 {print $2}') is PID 1 ($state)"

# --- the package
inside dpkg -i /mnt/sealproxy-test/sealproxy.deb >/dev/null || fail "dpkg -i"
inside systemctl cat sealproxy.service sealgate.service sealproxy-web.socket >/dev/null || fail "units not loaded after dpkg -i"
inside dpkg-query -W -f='${Conffiles}\n' sealproxy | grep -q '^ /etc/sealproxy/sealproxy.toml ' || fail "sealproxy.toml is not a conffile"
version=$(inside sealproxy version)
for unit in sealproxy.service sealgate.service sealproxy-web.socket; do
	[ "$(inside systemctl is-enabled "$unit" || true)" = disabled ] || fail "$unit is enabled by dpkg -i"
done
ok "dpkg -i: units loaded and not enabled, conffile registered, $version"

# --- the units' exposure as systemd rates it (docs/systemd.md quotes it)
for unit in sealproxy.service sealgate.service; do
	score=$(inside systemd-analyze security --no-pager "$unit" | awk '/Overall exposure level/ {print $(NF-2)}')
	awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 1.5) }' || fail "systemd-analyze security $unit: exposure ${score:-unknown}, docs/systemd.md says 1.5"
	scores="${scores:-}$unit $score "
done
ok "systemd-analyze security: $scores"

# --- sealgate as a service, requiring approval (keys made as the unit's
# comment says)
inside systemd-run --wait --pipe --quiet -p DynamicUser=yes -p StateDirectory=sealgate \
	/usr/bin/sealgate keygen --dir /var/lib/sealgate >/dev/null || fail "sealgate keygen"
token=$(inside systemd-run --wait --pipe --quiet -p DynamicUser=yes -p StateDirectory=sealgate \
	/usr/bin/sealgate operator add ci --dir /var/lib/sealgate) || fail "sealgate operator add"
case $token in sgt_?*) ;; *) fail "sealgate operator add printed no token" ;; esac
thp=$(inside sealgate thp --dir /var/lib/sealgate | head -1)
put /etc/systemd/system/sealgate.service.d/test.conf <<'CONF'
[Service]
ExecStart=
ExecStart=/usr/bin/sealgate serve --dir /var/lib/sealgate --listen 127.0.0.1:7500 --approval required
CONF
inside systemctl daemon-reload
inside systemctl start sealgate.service || fail "systemctl start sealgate"
until_true 20 inside curl -fsS http://127.0.0.1:7500/adv || fail "sealgate does not answer /adv"
[ "$(show sealgate.service DynamicUser)" = yes ] || fail "sealgate is not a DynamicUser service"
ok "sealgate.service active (DynamicUser), approval required"

# --- a key sealed to the gate, a backend, the packaged example configuration
inside sh -c 'cd /etc/sealproxy && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout /root/web.key -out web.crt -days 2 -subj /CN=web.test -addext subjectAltName=DNS:web.test 2>/dev/null'
inside sh -c 'seal encrypt tang "$1" < /root/web.key > /etc/sealproxy/web.key.jwe && rm /root/web.key && chmod 0644 /etc/sealproxy/*' \
	sh "{\"url\":\"http://127.0.0.1:7500\",\"thp\":\"$thp\"}" || fail "seal encrypt"
# The backend answers every connection with one HTTP response, after
# reading the request's head.
put /usr/local/lib/sealproxy-test/reply <<'REPLY'
#!/bin/sh
while IFS= read -r line; do [ "$line" = "$(printf '\r')" ] && break; done
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello through sealproxy\n'
REPLY
inside chmod 0755 /usr/local/lib/sealproxy-test/reply
inside systemd-run --quiet --unit=backend -p DynamicUser=yes \
	socat TCP-LISTEN:8080,bind=127.0.0.1,reuseaddr,fork EXEC:/usr/local/lib/sealproxy-test/reply
until_true 20 inside curl -fsS http://127.0.0.1:8080/ || fail "backend does not answer"
# A short watchdog, so that the test sees it fire; the abort lands fast.
put /etc/systemd/system/sealproxy.service.d/test.conf <<'CONF'
[Service]
WatchdogSec=5s
TimeoutAbortSec=2s
CONF
inside systemctl daemon-reload

# --- start: held at the gate, STATUS shows the code, approved
approve() {
	local what=$1 status code=
	deadline=$((SECONDS + 30))
	until code=$(show sealproxy.service StatusText | grep -oE 'code [0-9A-Z]{4}-[0-9A-Z]{4}'); do
		[ $SECONDS -lt $deadline ] || fail "$what: no approval code in STATUS (StatusText: $(show sealproxy.service StatusText))"
		sleep 0.2
	done
	code=${code#code }
	status=$(show sealproxy.service StatusText)
	[ "$(show sealproxy.service ActiveState)" = activating ] || fail "$what: not activating while held: $(show sealproxy.service ActiveState)"
	pending=$(inside env SEALGATE_TOKEN="$token" seal pending --gate http://127.0.0.1:7500)
	# Number matching: the gate lists the request, never its code; the
	# operator types the code read from the host's STATUS.
	if grep -qF "$code" <<<"$pending"; then fail "$what: seal pending shows the code $code"; fi
	grep -qF "127.0.0.1" <<<"$pending" || fail "$what: seal pending lists no request from 127.0.0.1: $pending"
	inside env SEALGATE_TOKEN="$token" seal approve "$code" --gate http://127.0.0.1:7500 >/dev/null || fail "$what: seal approve $code"
	until_true 30 has sealproxy.service ActiveState active || fail "$what: not active after approval"
	ok "$what: STATUS \"$status\" while held; listed without its code; seal approve $code; active"
}
inside systemctl start sealproxy-web.socket
inside systemctl start --no-block sealproxy.service
approve "start"
[ "$(show sealproxy.service StatusText)" = "serving 1 listener(s)" ] || fail "StatusText after start: $(show sealproxy.service StatusText)"

# --- a TLS round trip on :443, passed by the socket unit to a process
# without capabilities
tls() { inside curl -fsS --max-time 10 --cacert /etc/sealproxy/web.crt --resolve "web.test:$1:127.0.0.1" "https://web.test:$1/"; }
[ "$(tls 443)" = "hello through sealproxy" ] || fail "TLS round trip on :443"
[ "$(show sealproxy.service CapabilityBoundingSet)" = "" ] || fail "sealproxy has capabilities"
ok "TLS round trip through the sealed key on :443 (socket activation, no capabilities)"

# The admin socket that reloads belongs to the service's transient user,
# and nobody else may connect (UMask=0077: no group or other bits).
sock=$(inside stat -c '%a %U' /run/sealproxy/admin.sock)
main_user=$(inside ps -o user= -p "$(show sealproxy.service MainPID)")
case $sock in
?00" $main_user") [ "$main_user" != root ] || fail "sealproxy runs as root" ;;
*) fail "admin socket: mode and owner $sock, service user $main_user" ;;
esac
ok "admin socket: mode ${sock% *}, owned by the service's user $main_user"

# --- a reload that works: a second listener appears
inside sh -c 'cat >> /etc/sealproxy/sealproxy.toml' <<'CONF'

[[listener]]
name = "direct"
listen = "127.0.0.1:8443"
mode = "offload"
keys = ["web"]
backend = "127.0.0.1:8080"
CONF
inside systemctl reload sealproxy.service || fail "systemctl reload of a good configuration failed"
[ "$(tls 8443)" = "hello through sealproxy" ] || fail "the reloaded listener on :8443"
ok "systemctl reload: exit 0, new listener serves"

# --- a reload that fails: systemctl reload exits non-zero, the old
# configuration keeps serving
inside cp /etc/sealproxy/sealproxy.toml /root/good.toml
inside sh -c 'sed -i "1i bogus = 1" /etc/sealproxy/sealproxy.toml'
if inside systemctl reload sealproxy.service 2>/dev/null; then fail "systemctl reload of a broken configuration exited 0"; fi
[ "$(show sealproxy.service ActiveState)" = active ] || fail "sealproxy not active after a failed reload"
show sealproxy.service StatusText | grep -q "last reload failed" || fail "StatusText after a failed reload: $(show sealproxy.service StatusText)"
[ "$(tls 443)" = "hello through sealproxy" ] && [ "$(tls 8443)" = "hello through sealproxy" ] || fail "not serving after a failed reload"
journal=$(inside journalctl --no-pager -u sealproxy.service)
grep -qF "sealproxy: error: reload failed, the previous configuration stays: /etc/sealproxy/sealproxy.toml:1: bogus: unknown setting" <<<"$journal" ||
	fail "the journal lacks sealproxy reload's error"
inside cp /root/good.toml /etc/sealproxy/sealproxy.toml
ok "systemctl reload of a broken configuration: exit non-zero, still serving, STATUS says so"

# --- an upgrade: SIGUSR2 to the main process starts a successor, held at
# the gate like a start (its code in the old process's STATUS while the
# unit stays active and serving); once approved it takes the sockets, the
# unit stays active with the new MAINPID and the old process exits
old_pid=$(show sealproxy.service MainPID)
inside systemctl kill -s USR2 --kill-whom=main sealproxy.service || fail "systemctl kill -s USR2"
deadline=$((SECONDS + 30))
until code=$(show sealproxy.service StatusText | grep -oE 'upgrading: .*code [0-9A-Z]{4}-[0-9A-Z]{4}'); do
	[ $SECONDS -lt $deadline ] || fail "upgrade: no approval code in STATUS (StatusText: $(show sealproxy.service StatusText))"
	sleep 0.2
done
code=$(grep -oE '[0-9A-Z]{4}-[0-9A-Z]{4}$' <<<"$code")
[ "$(show sealproxy.service ActiveState)" = active ] && [ "$(show sealproxy.service MainPID)" = "$old_pid" ] ||
	fail "upgrade: $(show sealproxy.service ActiveState), MainPID $(show sealproxy.service MainPID) while the successor waits"
[ "$(tls 443)" = "hello through sealproxy" ] || fail "upgrade: not serving while the successor waits"
inside env SEALGATE_TOKEN="$token" seal approve "$code" --gate http://127.0.0.1:7500 >/dev/null || fail "upgrade: seal approve $code"
new_main() { local p; p=$(show sealproxy.service MainPID); [ "$p" != "$old_pid" ] && [ "$p" != 0 ]; }
until_true 30 new_main || fail "upgrade: MainPID still $(show sealproxy.service MainPID)"
until_true 30 has sealproxy.service StatusText "serving 2 listener(s)" || fail "upgrade: StatusText $(show sealproxy.service StatusText)"
old_gone() { ! inside kill -0 "$old_pid"; }
until_true 30 old_gone || fail "upgrade: the old process $old_pid still runs"
[ "$(show sealproxy.service ActiveState)" = active ] || fail "upgrade: $(show sealproxy.service ActiveState) after the handover"
[ "$(tls 443)" = "hello through sealproxy" ] && [ "$(tls 8443)" = "hello through sealproxy" ] || fail "upgrade: not serving after the handover"
# The successor pings the watchdog (WatchdogSec=5s here): WATCHDOG_PID
# named its predecessor.
sleep 6
[ "$(show sealproxy.service ActiveState)" = active ] && [ "$(show sealproxy.service NRestarts)" = 0 ] ||
	fail "upgrade: the watchdog fired on the successor: $(show sealproxy.service ActiveState), $(show sealproxy.service Result)"
# systemd took the successor for its own child (read from PIDFile= when
# the old main process exited), so that a stop waits for it: a main
# process that is another's child is SIGKILLed at once on this legacy
# cgroup hierarchy (CI saw it).
inside journalctl --no-pager -u sealproxy.service | grep -F "which is not our child" &&
	fail "upgrade: systemd supervises the successor as another's child"
[ "$(inside cat /run/sealproxy/sealproxy.pid)" = "$(show sealproxy.service MainPID)" ] ||
	fail "upgrade: PIDFile= holds $(inside cat /run/sealproxy/sealproxy.pid), MainPID is $(show sealproxy.service MainPID)"
ok "upgrade: successor held at the gate (code in STATUS, still serving), approved; active, MainPID $old_pid -> $(show sealproxy.service MainPID) (from PIDFile=, systemd's own child), old process gone, watchdog pinged by the successor"

# --- stop: drains and exits 0 (after the upgrade: systemd waits for the
# successor it adopted, and reads its exit status)
inside systemctl stop sealproxy.service
[ "$(show sealproxy.service Result)" = success ] && [ "$(show sealproxy.service ExecMainStatus)" = 0 ] ||
	fail "stop: Result=$(show sealproxy.service Result) ExecMainStatus=$(show sealproxy.service ExecMainStatus)"
ok "systemctl stop: exit 0"

# --- started by traffic on the socket: the connection waits for the
# approval, then gets its answer
inside sh -c 'curl -fsS --max-time 60 --cacert /etc/sealproxy/web.crt --resolve web.test:443:127.0.0.1 https://web.test/ > /root/activated.out 2>&1' &
curl_pid=$!
approve "start by a connection to :443"
wait "$curl_pid" || fail "the connection that started sealproxy failed: $(inside cat /root/activated.out)"
[ "$(inside cat /root/activated.out)" = "hello through sealproxy" ] || fail "activation answer: $(inside cat /root/activated.out)"
ok "the connection that started sealproxy through the socket got its answer"

# --- the watchdog: alive past several WatchdogSec, killed when frozen
sleep 6
[ "$(show sealproxy.service ActiveState)" = active ] && [ "$(show sealproxy.service NRestarts)" = 0 ] ||
	fail "the watchdog restarted a healthy sealproxy"
inside systemctl kill --signal=SIGSTOP sealproxy.service
until_true 20 has sealproxy.service Result watchdog || fail "frozen sealproxy: Result=$(show sealproxy.service Result)"
inside systemctl stop sealproxy.service
ok "watchdog: pinged while healthy, fired when frozen"

# --- the memlock refusal
put /etc/systemd/system/sealproxy.service.d/memlock.conf <<'CONF'
[Service]
LimitMEMLOCK=32K
CONF
inside systemctl daemon-reload
inside systemctl reset-failed sealproxy.service
if inside systemctl start sealproxy.service 2>/dev/null; then fail "started with LimitMEMLOCK=32K"; fi
until_true 10 sh -c "nsenter -t $pid1 -a journalctl --no-pager -u sealproxy.service | grep -q 'locked memory limit too low: RLIMIT_MEMLOCK is 32768 bytes'" ||
	fail "no memlock refusal in the journal"
inside systemctl stop sealproxy.service
inside rm /etc/systemd/system/sealproxy.service.d/memlock.conf
ok "LimitMEMLOCK=32K: refused, with the figure in the journal"

# --- reinstalling keeps the edited conffile; removing stops the units and
# keeps it
inside dpkg -i /mnt/sealproxy-test/sealproxy.deb >/dev/null || fail "dpkg -i again"
inside grep -q '^name = "direct"' /etc/sealproxy/sealproxy.toml || fail "dpkg -i replaced the edited sealproxy.toml"
inside systemctl is-active --quiet sealgate.service sealproxy-web.socket || fail "units not active before dpkg -r"
inside dpkg -r sealproxy >/dev/null || fail "dpkg -r"
for unit in sealgate.service sealproxy-web.socket sealproxy.service; do
	[ "$(inside systemctl is-active "$unit" || true)" != active ] || fail "$unit still active after dpkg -r"
done
inside test -f /etc/sealproxy/sealproxy.toml || fail "dpkg -r removed the conffile"
ok "dpkg -i again keeps the edited conffile; dpkg -r stops the units, keeps the conffile"

inside systemctl stop backend.service
