package unlock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/awnumar/memguard"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/unlock/sss"
)

// ErrNotEnoughShares reports an sss recovery that got fewer than t shares.
var ErrNotEnoughShares = errors.New("not enough sss shares")

// sssPin shares the content key t-of-n among child pins (Shamir).
type sssPin struct{}

// sssNode is the sss pin's clevis node.
type sssNode struct {
	JWE []string `json:"jwe"`
	P   string   `json:"p"`
	T   int      `json:"t"`
}

// sssConfig is clevis's sss pin configuration: each pin maps to one
// configuration object or an array of them.
type sssConfig struct {
	T    int                        `json:"t"`
	Pins map[string]json.RawMessage `json:"pins"`
}

type childConfig struct {
	pin    string
	config []byte
}

func parseSSSConfig(config []byte) (int, []childConfig, error) {
	cfg := sssConfig{T: 1}
	if err := decodeStrict(config, &cfg); err != nil {
		return 0, nil, fmt.Errorf("%w: sss: %v", ErrBadConfig, err)
	}
	var children []childConfig
	names := make([]string, 0, len(cfg.Pins))
	for name := range cfg.Pins {
		names = append(names, name)
	}
	slices.Sort(names) // a stable order of shares for the same config
	for _, name := range names {
		raw := bytes.TrimSpace(cfg.Pins[name])
		if len(raw) > 0 && raw[0] == '[' {
			var list []json.RawMessage
			if err := json.Unmarshal(raw, &list); err != nil {
				return 0, nil, fmt.Errorf("%w: sss: pins.%s: %v", ErrBadConfig, name, err)
			}
			for _, item := range list {
				children = append(children, childConfig{name, item})
			}
		} else {
			children = append(children, childConfig{name, raw})
		}
	}
	if len(children) == 0 {
		return 0, nil, fmt.Errorf("%w: sss: \"pins\" lists no pins", ErrBadConfig)
	}
	if cfg.T < 1 || cfg.T > len(children) {
		return 0, nil, fmt.Errorf("%w: sss: t is %d, but must be between 1 and the %d pins given", ErrBadConfig, cfg.T, len(children))
	}
	return cfg.T, children, nil
}

func (sssPin) bind(ctx context.Context, config []byte, opts *Options) (*header, []byte, error) {
	t, children, err := parseSSSConfig(config)
	if err != nil {
		return nil, nil, err
	}
	poly, err := sss.New(t)
	if err != nil {
		return nil, nil, err
	}
	defer poly.Wipe()
	node := &sssNode{P: b64.EncodeToString(poly.Prime()), T: t}
	for i, child := range children {
		share, err := poly.Share()
		if err != nil {
			return nil, nil, err
		}
		out, err := Encrypt(ctx, child.pin, child.config, share, opts)
		secmem.Bytes(share)
		if err != nil {
			return nil, nil, fmt.Errorf("sss: share %d (%s): %w", i+1, child.pin, err)
		}
		node.JWE = append(node.JWE, string(out))
	}
	hdr := &header{Alg: "dir", Enc: encA256GCM, Clevis: &clevisNode{Pin: "sss", Node: node}}
	return hdr, poly.Secret(), nil
}

// ShareError reports an sss recovery that could not gather t shares; it
// names every share that failed and why.
type ShareError struct {
	Needed, Total, Recovered int
	Failures                 []error
}

func (e *ShareError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sss: %d of %d shares needed, %d recovered", e.Needed, e.Total, e.Recovered)
	for _, f := range e.Failures {
		fmt.Fprintf(&b, "; %v", f)
	}
	return b.String()
}

func (e *ShareError) Unwrap() []error { return append([]error{ErrNotEnoughShares}, e.Failures...) }

type shareResult struct {
	index int
	share *memguard.LockedBuffer
	err   error
}

// maxConcurrentShares bounds the children of one sss node recovered at
// once: a JWE of up to 1 MiB can hold over a thousand shares, and each is
// a connection to a Tang server. Under a start-up's recovery plan there
// is no bound: a gate approves an approval group only once every point it
// announced has arrived, and a share waiting for approval keeps its slot.
const maxConcurrentShares = 32

// keyAgreement decrypts the children concurrently, at most
// maxConcurrentShares at a time without a recovery plan, and stops the
// rest as soon as t shares are in; the content key is the shared secret.
func (sssPin) keyAgreement(ctx context.Context, j *jwe, r recovery) jose.OpaqueKeyDecrypter {
	return keyAgreementFunc(func([]byte, jose.Header) ([]byte, error) { return recoverSSS(ctx, j, r) })
}

func recoverSSS(ctx context.Context, j *jwe, r recovery) ([]byte, error) {
	var node *sssNode
	if err := j.node(&node); err != nil {
		return nil, err
	}
	if node == nil || j.header.Alg != "dir" {
		return nil, fmt.Errorf("%w: sss pin needs alg dir and clevis.sss", ErrMalformed)
	}
	prime, err := b64.DecodeString(node.P)
	if err != nil {
		return nil, fmt.Errorf("%w: sss: p is not base64url", ErrMalformed)
	}
	n := len(node.JWE)
	if node.T < 1 || node.T > n {
		return nil, fmt.Errorf("%w: sss: t is %d with %d shares", ErrMalformed, node.T, n)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan shareResult, n)
	slots := make(chan struct{}, maxConcurrentShares)
	if r.plan != nil {
		slots = make(chan struct{}, n)
	}
	for i, child := range node.JWE {
		go func() {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				results <- shareResult{i, nil, ctx.Err()}
				return
			}
			defer func() { <-slots }()
			share, err := decrypt(ctx, []byte(child), r)
			results <- shareResult{i, share, err}
		}()
	}
	var shares []*memguard.LockedBuffer
	defer func() {
		for _, s := range shares {
			s.Destroy()
		}
	}()
	failed := map[int]error{}
	received := 0
	for received < n && len(shares) < node.T {
		r := <-results
		received++
		if r.err != nil {
			failed[r.index] = fmt.Errorf("share %d: %w", r.index+1, r.err)
			continue
		}
		shares = append(shares, r.share)
	}
	if remaining := n - received; remaining > 0 {
		// Enough shares: stop the others and destroy whatever they return.
		cancel()
		go func() {
			for range remaining {
				if r := <-results; r.share != nil {
					r.share.Destroy()
				}
			}
		}()
	}
	if len(shares) < node.T {
		var failures []error
		for _, i := range slices.Sorted(maps.Keys(failed)) {
			failures = append(failures, failed[i])
		}
		return nil, &ShareError{Needed: node.T, Total: n, Recovered: len(shares), Failures: failures}
	}
	points := make([][]byte, len(shares))
	for i, s := range shares {
		points[i] = s.Bytes()
	}
	secret, err := sss.Combine(prime, points)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return secret, nil
}

// plan prepares the recoveries of every child.
func (sssPin) plan(p *recoveryPlan, j *jwe) {
	var node *sssNode
	if j.node(&node) != nil || node == nil {
		return
	}
	for _, child := range node.JWE {
		p.add([]byte(child))
	}
}

func (sssPin) inspect(j *jwe) (*Node, error) {
	var s *sssNode
	if err := j.node(&s); err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("%w: sss pin without clevis.sss", ErrMalformed)
	}
	n := &Node{Pin: "sss", Threshold: s.T}
	for i, child := range s.JWE {
		c, err := Inspect([]byte(child))
		if err != nil {
			return nil, fmt.Errorf("sss share %d: %w", i+1, err)
		}
		n.Shares = append(n.Shares, c)
	}
	return n, nil
}

func (sssPin) describe(n *Node) []string {
	return []string{fmt.Sprintf("sss: %d of %d", n.Threshold, len(n.Shares))}
}
