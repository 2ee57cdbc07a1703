package gate

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Rule decides requests without an operator: the first rule that matches
// a request ready for a decision approves or denies it, in the audit log
// as operator "policy:NAME". A request no rule matches waits for an
// operator.
type Rule struct {
	Name   string
	Action State // StateApproved or StateDenied
	// Sources the request must come from; empty matches any.
	Sources []netip.Prefix
	// Hosts are path.Match patterns for the host label; empty matches
	// any (a request without a session has the empty label).
	Hosts []string
	// Window, if set, is the time of day (UTC) the rule applies in.
	Window *Window
	// Max, if positive, bounds the requests this rule approves per Per;
	// beyond it the rule does not apply and the request waits for an
	// operator.
	Max int
	Per time.Duration
}

// Window is a time of day, in minutes after midnight UTC, [From, To); a
// window with From > To runs over midnight.
type Window struct{ From, To int }

func (w *Window) contains(t time.Time) bool {
	m := t.UTC().Hour()*60 + t.UTC().Minute()
	if w.From <= w.To {
		return m >= w.From && m < w.To
	}
	return m >= w.From || m < w.To
}

// ErrBadPolicy reports a policy file that cannot be used.
var ErrBadPolicy = errors.New("bad policy")

type policyFile struct {
	Rule []struct {
		Name    string   `toml:"name"`
		Action  string   `toml:"action"`
		Sources []string `toml:"sources"`
		Hosts   []string `toml:"hosts"`
		Window  string   `toml:"window"`
		Max     int      `toml:"max"`
		Per     string   `toml:"per"`
	} `toml:"rule"`
}

// ParsePolicy reads rules from TOML:
//
//	[[rule]]
//	name = "office hours"
//	action = "approve"            # or "deny"
//	sources = ["10.1.0.0/16"]
//	hosts = ["web-*"]
//	window = "08:00-18:00"        # UTC
//	max = 10                      # approvals
//	per = "1h"
func ParsePolicy(data []byte) ([]Rule, error) {
	var f policyFile
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPolicy, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("%w: unknown key %s", ErrBadPolicy, und[0])
	}
	var rules []Rule
	for i, r := range f.Rule {
		where := fmt.Sprintf("rule %d", i+1)
		if r.Name != "" {
			where += " (" + r.Name + ")"
		}
		rule := Rule{Name: r.Name, Hosts: r.Hosts, Max: r.Max}
		if rule.Name == "" {
			rule.Name = strconv.Itoa(i + 1)
		}
		switch r.Action {
		case "approve":
			rule.Action = StateApproved
		case "deny":
			rule.Action = StateDenied
		default:
			return nil, fmt.Errorf("%w: %s: action is approve or deny, not %q", ErrBadPolicy, where, r.Action)
		}
		for _, s := range r.Sources {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				a, aerr := netip.ParseAddr(s)
				if aerr != nil {
					return nil, fmt.Errorf("%w: %s: source %q is not an address or CIDR prefix", ErrBadPolicy, where, s)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			rule.Sources = append(rule.Sources, p.Masked())
		}
		for _, h := range r.Hosts {
			if _, err := path.Match(h, ""); err != nil {
				return nil, fmt.Errorf("%w: %s: host pattern %q: %v", ErrBadPolicy, where, h, err)
			}
		}
		if r.Window != "" {
			from, to, ok := strings.Cut(r.Window, "-")
			f, ferr := clockMinutes(from)
			t, terr := clockMinutes(to)
			if !ok || ferr != nil || terr != nil || f == t {
				return nil, fmt.Errorf("%w: %s: window %q is not HH:MM-HH:MM", ErrBadPolicy, where, r.Window)
			}
			rule.Window = &Window{From: f, To: t}
		}
		if r.Max < 0 || (r.Max > 0) != (r.Per != "") {
			return nil, fmt.Errorf("%w: %s: max and per go together (max = 10, per = \"1h\")", ErrBadPolicy, where)
		}
		if r.Per != "" {
			if rule.Per, err = time.ParseDuration(r.Per); err != nil || rule.Per <= 0 {
				return nil, fmt.Errorf("%w: %s: per %q is not a duration such as \"1h\"", ErrBadPolicy, where, r.Per)
			}
			if rule.Action != StateApproved {
				return nil, fmt.Errorf("%w: %s: max and per bound approvals only", ErrBadPolicy, where)
			}
		}
		rules = append(rules, rule)
	}
	return rules, nil
}

func clockMinutes(s string) (int, error) {
	t, err := time.Parse("15:04", strings.TrimSpace(s))
	if err != nil {
		return 0, err
	}
	return t.Hour()*60 + t.Minute(), nil
}

// matches reports whether rule applies to r at now.
func (rule *Rule) matches(r *request, now time.Time) bool {
	if len(rule.Sources) > 0 {
		a, err := netip.ParseAddr(r.source)
		if err != nil {
			return false
		}
		a = a.Unmap()
		in := false
		for _, p := range rule.Sources {
			in = in || p.Contains(a)
		}
		if !in {
			return false
		}
	}
	if len(rule.Hosts) > 0 {
		in := false
		for _, h := range rule.Hosts {
			ok, _ := path.Match(h, r.host)
			in = in || ok
		}
		if !in {
			return false
		}
	}
	return rule.Window == nil || rule.Window.contains(now)
}

// autoDecide applies the first matching rule to r, which just became
// ready. It reports whether r was decided. Called with g.mu held.
func (g *Gate) autoDecide(r *request) bool {
	now := g.cfg.Now()
	for i := range g.cfg.Rules {
		rule := &g.cfg.Rules[i]
		if !rule.matches(r, now) {
			continue
		}
		if rule.Max > 0 {
			used := g.ruleUses[i][:0]
			for _, t := range g.ruleUses[i] {
				if now.Sub(t) < rule.Per {
					used = append(used, t)
				}
			}
			g.ruleUses[i] = used
			if len(used) >= rule.Max {
				continue // spent for now: an operator decides
			}
		}
		if err := g.apply(r, rule.Action, "policy:"+rule.Name, "", now); err != nil {
			g.log.Error("policy decision not applied", "id", r.id, "err", err)
			return false
		}
		if rule.Max > 0 {
			g.ruleUses[i] = append(g.ruleUses[i], now)
		}
		return true
	}
	return false
}
