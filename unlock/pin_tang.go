package unlock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// ErrNoThumbprint reports a tang configuration without "thp" whose
// advertisement would have to be trusted blindly.
var ErrNoThumbprint = errors.New("no thumbprint (thp) to trust the Tang server by")

// tangPin binds to a Tang server with the McCallum-Relyea exchange.
type tangPin struct{}

// tangNode is the tang pin's clevis node.
type tangNode struct {
	URL string          `json:"url"`
	Adv json.RawMessage `json:"adv"`
}

// UntrustedError is returned by Encrypt when a Tang advertisement was
// fetched without a thumbprint to check it against; it lists the
// advertised signing-key thumbprints for the user to verify and pin.
type UntrustedError struct {
	URL         string
	Thumbprints []string
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("%v: %s advertises signing keys %s", ErrNoThumbprint, e.URL, strings.Join(e.Thumbprints, ", "))
}

func (e *UntrustedError) Unwrap() error { return ErrNoThumbprint }

// tangConfig is clevis's tang pin configuration.
type tangConfig struct {
	URL string          `json:"url"`
	Thp string          `json:"thp,omitempty"`
	Adv json.RawMessage `json:"adv,omitempty"` // a file name or the advertisement itself
}

func (tangPin) bind(ctx context.Context, config []byte, opts *Options) (*header, []byte, error) {
	var cfg tangConfig
	if err := decodeStrict(config, &cfg); err != nil {
		return nil, nil, fmt.Errorf("%w: tang: %v", ErrBadConfig, err)
	}
	if cfg.URL == "" {
		return nil, nil, fmt.Errorf("%w: tang: \"url\" is required", ErrBadConfig)
	}
	url, err := tang.BaseURL(cfg.URL)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: tang: %v", ErrBadConfig, err)
	}
	adv, err := tangAdvertisement(ctx, url, &cfg, opts)
	if err != nil {
		return nil, nil, err
	}
	srv, err := adv.ExchangeKey()
	if err != nil {
		return nil, nil, fmt.Errorf("tang %s: %w", url, err)
	}
	epk, z, err := tang.Bind(srv)
	if err != nil {
		return nil, nil, fmt.Errorf("tang %s: %w", url, err)
	}
	defer secmem.Bytes(z)
	hdr := &header{
		Alg: "ECDH-ES", Enc: encA256GCM, Kid: srv.Thumbprint(), Epk: epk,
		Clevis: &clevisNode{Pin: "tang", Node: &tangNode{URL: cfg.URL, Adv: adv.Payload}},
	}
	return hdr, concatKDF(z, encA256GCM), nil
}

// tangAdvertisement gets a verified, trusted advertisement: from the
// config (trusted because the user supplied it) or from the server
// (trusted by thumbprint, or on first use when allowed).
func tangAdvertisement(ctx context.Context, url string, cfg *tangConfig, opts *Options) (*tang.Advertisement, error) {
	if len(cfg.Adv) > 0 {
		raw := []byte(cfg.Adv)
		var name string
		if json.Unmarshal(cfg.Adv, &name) == nil {
			data, err := os.ReadFile(name)
			if err != nil {
				return nil, fmt.Errorf("%w: tang: reading adv: %v", ErrBadConfig, err)
			}
			raw = data
		}
		adv, err := tang.ParseAdvertisement(raw)
		if err != nil {
			return nil, fmt.Errorf("tang: the supplied adv: %w", err)
		}
		if cfg.Thp != "" {
			if err := adv.Trust(cfg.Thp); err != nil {
				return nil, fmt.Errorf("tang: the supplied adv: %w", err)
			}
		}
		return adv, nil
	}
	adv, err := opts.tang().Advertisement(ctx, url, cfg.Thp)
	if err != nil {
		return nil, err
	}
	if cfg.Thp == "" && !(opts != nil && opts.TrustOnFirstUse) {
		return nil, &UntrustedError{URL: url, Thumbprints: adv.SigningThumbprints()}
	}
	return adv, nil
}

// tangBlind checks a tang pin JWE and prepares its recovery.
func tangBlind(j *jwe) (url string, blind *tang.Blind, err error) {
	var node *tangNode
	if err := j.node(&node); err != nil {
		return "", nil, err
	}
	if node == nil || node.URL == "" || len(node.Adv) == 0 || j.header.Epk == nil || j.header.Kid == "" {
		return "", nil, fmt.Errorf("%w: tang pin needs clevis.tang.url, clevis.tang.adv, kid and epk", ErrMalformed)
	}
	if j.header.Alg != "ECDH-ES" {
		return "", nil, fmt.Errorf("%w: tang pin with alg %q, want ECDH-ES", ErrMalformed, j.header.Alg)
	}
	url, err = tang.BaseURL(node.URL)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	adv, err := tang.AdvertisementFromPayload(node.Adv)
	if err != nil {
		return "", nil, fmt.Errorf("%w: tang %s: %w", ErrMalformed, tang.Printable(node.URL), err)
	}
	srv, err := adv.FindExchangeKey(j.header.Kid)
	if err != nil {
		return "", nil, fmt.Errorf("%w: tang %s: %w", ErrMalformed, tang.Printable(node.URL), err)
	}
	blind, err = tang.NewBlind(srv, j.header.Epk)
	if err != nil {
		return "", nil, fmt.Errorf("%w: tang %s: %w", ErrMalformed, tang.Printable(node.URL), err)
	}
	return url, blind, nil
}

// keyAgreement is the McCallum-Relyea recovery: blind the stored point,
// have the Tang server (or gate) multiply it, unblind, and derive the
// content key from z = K.x with the Concat KDF, as ECDH-ES does.
func (tangPin) keyAgreement(ctx context.Context, j *jwe, r recovery) jose.OpaqueKeyDecrypter {
	return keyAgreementFunc(func(_ []byte, h jose.Header) ([]byte, error) {
		var (
			url   string
			blind *tang.Blind
			ro    = &tang.RecoverOptions{}
		)
		if r.plan != nil {
			url, blind, ro = r.plan.take(j, r.opts)
		}
		if blind == nil {
			var err error
			if url, blind, err = tangBlind(j); err != nil {
				return nil, err
			}
		}
		defer blind.Wipe()
		if r.opts != nil && r.opts.OnPending != nil && ro.OnPending == nil {
			ro.OnPending = r.opts.OnPending
		}
		z, err := r.opts.tang().RecoverWith(ctx, url, h.KeyID, blind, ro)
		if err != nil {
			return nil, err
		}
		defer secmem.Bytes(z)
		return concatKDF(z, j.header.Enc), nil
	})
}

// plan prepares j's recovery: its blinded point goes into its gate's
// commitment.
func (tangPin) plan(p *recoveryPlan, j *jwe) {
	if _, seen := p.blinds[j.protected]; seen {
		return
	}
	url, blind, err := tangBlind(j)
	if err != nil {
		return
	}
	p.blinds[j.protected] = blind
	p.urls[j.protected] = url
	p.points[url] = append(p.points[url], blind.Point())
}

func (tangPin) inspect(j *jwe) (*Node, error) {
	var t *tangNode
	if err := j.node(&t); err != nil {
		return nil, err
	}
	if t == nil {
		return nil, fmt.Errorf("%w: tang pin without clevis.tang", ErrMalformed)
	}
	n := &Node{Pin: "tang", URL: t.URL, Kid: j.header.Kid}
	if j.header.Epk != nil {
		n.Curve = j.header.Epk.Crv
	}
	adv, err := tang.AdvertisementFromPayload(t.Adv)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	n.Thumbprints = adv.SigningThumbprints()
	return n, nil
}

func (tangPin) describe(n *Node) []string {
	p := tang.Printable
	lines := []string{"tang " + p(n.URL), "  kid: " + p(n.Kid)}
	if n.Curve != "" {
		lines = append(lines, "  curve: "+p(n.Curve))
	}
	for _, thp := range n.Thumbprints {
		lines = append(lines, "  signing key thp: "+p(thp))
	}
	return lines
}
