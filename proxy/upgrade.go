package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

var (
	// ErrUpgradeFailed reports an upgrade whose successor did not become
	// ready (or that was refused): the running process keeps serving.
	ErrUpgradeFailed = errors.New("upgrade failed; the running process keeps serving")
	// ErrUpgradeDisabled reports an admin listener without POST /upgrade
	// ([admin] upgrade = false).
	ErrUpgradeDisabled = errors.New("the admin listener does not serve POST /upgrade")
)

// UpgradeHandler serves POST /upgrade: upgrade starts a successor and
// returns its pid once it serves. The answer is 200 with the pid, 409
// when an upgrade is already under way or the process is not serving,
// 500 with the reason when the successor failed. Like POST /reload it
// refuses what a web page could send (sameHostRequest).
func UpgradeHandler(upgrade func(context.Context) (int, error), busy error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if code, why := sameHostRequest(r); code != 0 {
			http.Error(w, why, code)
			return
		}
		pid, err := upgrade(r.Context())
		switch {
		case err == nil:
			fmt.Fprintf(w, "upgraded: pid %d serves\n", pid)
		case busy != nil && errors.Is(err, busy):
			http.Error(w, err.Error(), http.StatusConflict)
		default:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
}

// RequestUpgrade asks the daemon whose admin listener is at addr
// (host:port or unix:PATH) to upgrade, and waits for the outcome: the
// successor's pid once it serves, ErrUpgradeFailed with the daemon's
// reason otherwise.
func RequestUpgrade(ctx context.Context, addr string) (string, error) {
	b, status, msg, err := postAdmin(ctx, addr, "upgrade")
	if err != nil {
		return "", err
	}
	switch status {
	case http.StatusOK:
		return msg, nil
	case http.StatusInternalServerError, http.StatusConflict:
		return "", fmt.Errorf("%w: %s", ErrUpgradeFailed, msg)
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return "", fmt.Errorf("%s: %w", b, ErrUpgradeDisabled)
	}
	return "", fmt.Errorf("asking %s to upgrade: unexpected answer %d %s: %s", b, status, http.StatusText(status), msg)
}
