package gate

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"slices"
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
	// ParsePolicy refuses an approve rule without sources unless
	// AnySource says so.
	Sources   []netip.Prefix
	AnySource bool
	// Hosts are path.Match patterns for the host label; empty matches
	// any (a request without a session has the empty label). The label
	// is what the host says (Sealgate-Host): any client can claim any.
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

var (
	// ErrBadPolicy reports a policy file that cannot be used.
	ErrBadPolicy = errors.New("bad policy")
	// ErrApproveAnySource reports an approve rule without sources that
	// does not say any_source = true: it would approve anyone who holds
	// a sealed key.
	ErrApproveAnySource = errors.New("an approve rule without sources approves anyone who can reach the gate with a sealed key")
)

// Policy is a policy file: its rules, and the sources it reserves
// capacity for (besides those its approve rules name).
type Policy struct {
	Rules    []Rule
	Reserved []netip.Prefix
}

type policyFile struct {
	ReservedSources []string `toml:"reserved_sources"`
	Rule            []struct {
		Name      string   `toml:"name"`
		Action    string   `toml:"action"`
		Sources   []string `toml:"sources"`
		AnySource bool     `toml:"any_source"`
		Hosts     []string `toml:"hosts"`
		Window    string   `toml:"window"`
		Max       int      `toml:"max"`
		Per       string   `toml:"per"`
	} `toml:"rule"`
}

// ParsePolicy reads the rules of a policy file (see ParsePolicyFile).
func ParsePolicy(data []byte) ([]Rule, error) {
	p, err := ParsePolicyFile(data)
	if err != nil {
		return nil, err
	}
	return p.Rules, nil
}

// ParsePolicyFile reads a policy from TOML:
//
//	reserved_sources = ["10.2.0.0/16"] # wait in the reserved pool too
//
//	[[rule]]
//	name = "office hours"
//	action = "approve"            # or "deny"
//	sources = ["10.1.0.0/16"]     # or any_source = true (approve rules)
//	hosts = ["web-*"]             # the label the client sends
//	window = "08:00-18:00"        # UTC
//	max = 10                      # approvals
//	per = "1h"
func ParsePolicyFile(data []byte) (*Policy, error) {
	var f policyFile
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPolicy, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("%w: unknown key %s", ErrBadPolicy, und[0])
	}
	policy := &Policy{}
	for _, s := range f.ReservedSources {
		p, err := parseSource(s)
		if err != nil {
			return nil, fmt.Errorf("%w: reserved_sources: %v", ErrBadPolicy, err)
		}
		policy.Reserved = append(policy.Reserved, p)
	}
	for i, r := range f.Rule {
		where := fmt.Sprintf("rule %d", i+1)
		if r.Name != "" {
			where += " (" + r.Name + ")"
		}
		rule := Rule{Name: r.Name, Hosts: r.Hosts, Max: r.Max, AnySource: r.AnySource}
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
			p, err := parseSource(s)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrBadPolicy, where, err)
			}
			rule.Sources = append(rule.Sources, p)
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
		switch {
		case r.AnySource && rule.Action != StateApproved:
			return nil, fmt.Errorf("%w: %s: any_source is for approve rules (a deny rule without sources matches any)", ErrBadPolicy, where)
		case r.AnySource && len(rule.Sources) > 0:
			return nil, fmt.Errorf("%w: %s: any_source = true and sources contradict each other; keep one", ErrBadPolicy, where)
		case rule.Action == StateApproved && len(rule.Sources) == 0 && !r.AnySource:
			return nil, fmt.Errorf("%w: %s: %w", ErrBadPolicy, where, ErrApproveAnySource)
		}
		policy.Rules = append(policy.Rules, rule)
	}
	return policy, nil
}

// parseSource reads an address or a CIDR prefix.
func parseSource(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return netip.Prefix{}, fmt.Errorf("source %q is not an address or CIDR prefix", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return p.Masked(), nil
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

// ruleFor returns the index of the first rule that decides r at now, or
// -1. Called with g.mu held.
func (g *Gate) ruleFor(r *request, now time.Time) int {
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
		return i
	}
	return -1
}

// autoDecide applies the first matching rule to r, which just became
// ready. It reports whether r was decided. Called with g.mu held.
func (g *Gate) autoDecide(r *request) bool {
	now := g.cfg.Now()
	i := g.ruleFor(r, now)
	if i < 0 {
		return false
	}
	rule := &g.cfg.Rules[i]
	if err := g.apply(r, rule.Action, "policy:"+rule.Name, "", now); err != nil {
		g.log.Error("policy decision not applied", "id", r.id, "err", err)
		return false
	}
	if rule.Max > 0 {
		g.ruleUses[i] = append(g.ruleUses[i], now)
	}
	if rule.Action == StateDenied {
		g.keepDenial(r)
	}
	return true
}

// maxRuleDenials bounds the denials by rules that are kept to answer 403.
// A rule denies what anyone sends it, at the rate it is sent, and each
// denial is kept for DeniedTTL; the oldest beyond the bound are dropped,
// as if their time were up (a retry meets the same rule again).
const maxRuleDenials = 4096

// keepDenial counts r, just denied by a rule, against maxRuleDenials.
// Called with g.mu held.
func (g *Gate) keepDenial(r *request) {
	g.denials = append(g.denials, r)
	if len(g.denials) <= maxRuleDenials {
		return
	}
	drop := len(g.denials) - maxRuleDenials
	for _, old := range g.denials[:drop] {
		if g.requests[old.key] == old {
			delete(g.requests, old.key)
		}
	}
	g.denials = slices.Delete(g.denials, 0, drop)
}
