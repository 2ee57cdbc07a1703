package gate

import (
	"encoding/json"
	"time"
)

// Lock tells a webhook that an operator's approvals are locked after
// WrongCodes wrong codes within WrongCodeWindow: someone is guessing codes
// with that operator's credentials, or the operator is approving what no
// host shows.
type Lock struct {
	Operator string    `json:"operator"`
	Source   string    `json:"source"`
	Until    time.Time `json:"until"`
}

// notifyLock sends a "lock" event to the webhook in the background, within
// the same bound on deliveries in flight as notify.
func (g *Gate) notifyLock(operator, source string, until time.Time) {
	wh := g.cfg.Webhook
	if wh == nil {
		return
	}
	select {
	case g.hooks <- struct{}{}:
	default:
		g.log.Warn("webhook: too many deliveries in flight; dropped", "event", "lock", "operator", operator)
		return
	}
	g.hooksWG.Add(1)
	go func() {
		defer g.hooksWG.Done()
		defer func() { <-g.hooks }()
		body, _ := json.Marshal(WebhookEvent{Event: "lock", Lock: &Lock{Operator: operator, Source: source, Until: until}})
		if err := wh.deliver(g.closing, body); err != nil {
			g.log.Error("webhook delivery failed", "event", "lock", "err", err)
		}
	}()
}
