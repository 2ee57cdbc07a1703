package unlock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/awnumar/memguard"

	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/unlock/sss"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

var (
	// ErrBadConfig reports a pin configuration that cannot be used.
	ErrBadConfig = errors.New("bad pin configuration")
	// ErrNoThumbprint reports a tang configuration without "thp" whose
	// advertisement would have to be trusted blindly.
	ErrNoThumbprint = errors.New("no thumbprint (thp) to trust the Tang server by")
	// ErrNotEnoughShares reports an sss recovery that got fewer than t shares.
	ErrNotEnoughShares = errors.New("not enough sss shares")
)

// Options are the choices shared by Encrypt and Decrypt.
type Options struct {
	// Tang is the client for Tang servers; nil means a zero tang.Client.
	Tang *tang.Client
	// TrustOnFirstUse lets Encrypt trust an advertisement fetched without a
	// pinned thumbprint (seal -y). Without it, a tang config needs "thp"
	// or an "adv" the user supplied.
	TrustOnFirstUse bool
	// Session, when set, makes the recoveries of one Decrypt one approval
	// session at each gate they go to: one operator decision per gate
	// approves all of them. Nil makes each recovery a session of its own
	// (one decision each); either way the code is the committed exchange's.
	Session *Session
	// OnPending is told when a gate holds a recovery for approval, with
	// the code to show, once the gate confirmed it (once per gate in a
	// session); nil ignores it.
	OnPending func(tang.Pending)
}

// Session names one start-up of one host to the gates it asks. By
// default each Decrypt is its own session; Prepare makes several JWEs
// (all keys of one start-up) one session.
type Session struct {
	ID   string // random; NewSession makes one
	Host string // a label for the operator, e.g. the host name

	mu       sync.Mutex
	prepared *session
}

// NewSession returns a session with a fresh random id.
func NewSession(host string) *Session {
	return &Session{ID: tang.NewSessionID(), Host: host}
}

// Prepare blinds every tang recovery of these JWEs now, so that each gate
// is told how many keys the whole start-up sends it and one decision
// approves them all; Decrypt of any of them with this session uses the
// prepared recoveries (each once). Call Close when done.
func (s *Session) Prepare(jwes ...[]byte) {
	p := newSession(s.ID, s.Host, jwes...)
	s.mu.Lock()
	old := s.prepared
	s.prepared = p
	s.mu.Unlock()
	if old != nil {
		old.wipe()
	}
}

// Close wipes the prepared recoveries that no Decrypt used.
func (s *Session) Close() {
	s.mu.Lock()
	p := s.prepared
	s.prepared = nil
	s.mu.Unlock()
	if p != nil {
		p.wipe()
	}
}

func (s *Session) current() *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.prepared
}

func (o *Options) tang() *tang.Client {
	if o == nil || o.Tang == nil {
		return &tang.Client{}
	}
	return o.Tang
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

// Encrypt seals plaintext with the named pin ("tang" or "sss") and its JSON
// configuration, the same configuration clevis takes. The result is a
// compact JWE without a trailing newline.
func Encrypt(ctx context.Context, pin string, config []byte, plaintext []byte, opts *Options) ([]byte, error) {
	var (
		hdr *header
		cek []byte
		err error
	)
	switch pin {
	case "tang":
		hdr, cek, err = bindTang(ctx, config, opts)
	case "sss":
		hdr, cek, err = bindSSS(ctx, config, opts)
	default:
		return nil, fmt.Errorf("%w %q: choose tang or sss", ErrUnknownPin, pin)
	}
	if err != nil {
		return nil, err
	}
	defer secmem.Bytes(cek)
	return sealContent(hdr, cek, plaintext)
}

// Decrypt recovers the plaintext of a Clevis JWE into locked memory. The
// caller destroys the buffer (or seals it into an enclave). On failure
// nothing is returned.
func Decrypt(ctx context.Context, data []byte, opts *Options) (*memguard.LockedBuffer, error) {
	var s *session
	if opts != nil && opts.Session != nil {
		if s = opts.Session.current(); s == nil {
			s = newSession(opts.Session.ID, opts.Session.Host, data)
			defer s.wipe()
		}
	}
	return decrypt(ctx, data, opts, s)
}

func decrypt(ctx context.Context, data []byte, opts *Options, s *session) (*memguard.LockedBuffer, error) {
	j, err := parseJWE(data)
	if err != nil {
		return nil, err
	}
	cek, err := recoverCEK(ctx, j, opts, s)
	if err != nil {
		return nil, err
	}
	defer secmem.Bytes(cek)
	return openContent(j, cek)
}

func recoverCEK(ctx context.Context, j *jwe, opts *Options, s *session) ([]byte, error) {
	switch pin := j.header.Clevis.Pin; pin {
	case "tang":
		return recoverTang(ctx, j, opts, s)
	case "sss":
		return recoverSSS(ctx, j, opts, s)
	default:
		return nil, fmt.Errorf("%w %q: sealproxy opens tang and sss", ErrUnknownPin, pin)
	}
}

func decodeStrict(config []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(config))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// tangConfig is clevis's tang pin configuration.
type tangConfig struct {
	URL string          `json:"url"`
	Thp string          `json:"thp,omitempty"`
	Adv json.RawMessage `json:"adv,omitempty"` // a file name or the advertisement itself
}

func bindTang(ctx context.Context, config []byte, opts *Options) (*header, []byte, error) {
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
		Clevis: &clevisNode{Pin: "tang", Tang: &tangNode{URL: cfg.URL, Adv: adv.Payload}},
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
	node := j.header.Clevis.Tang
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

func recoverTang(ctx context.Context, j *jwe, opts *Options, s *session) ([]byte, error) {
	var (
		url   string
		blind *tang.Blind
		ro    = &tang.RecoverOptions{}
	)
	if s != nil {
		url, blind, ro = s.recovery(j, opts)
	}
	if blind == nil {
		var err error
		if url, blind, err = tangBlind(j); err != nil {
			return nil, err
		}
	}
	defer blind.Wipe()
	if opts != nil && opts.OnPending != nil && ro.OnPending == nil {
		ro.OnPending = opts.OnPending
	}
	z, err := opts.tang().RecoverWith(ctx, url, j.header.Kid, blind, ro)
	if err != nil {
		return nil, err
	}
	defer secmem.Bytes(z)
	return concatKDF(z, j.header.Enc), nil
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

func bindSSS(ctx context.Context, config []byte, opts *Options) (*header, []byte, error) {
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
	hdr := &header{Alg: "dir", Enc: encA256GCM, Clevis: &clevisNode{Pin: "sss", SSS: node}}
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
// a connection to a Tang server. Under an approval session there is no
// bound: a gate approves a session only once every point it announced
// has arrived, and a share waiting for approval keeps its slot.
const maxConcurrentShares = 32

// recoverSSS decrypts the children concurrently, at most
// maxConcurrentShares at a time outside an approval session, and stops
// the rest as soon as t shares are in.
func recoverSSS(ctx context.Context, j *jwe, opts *Options, s *session) ([]byte, error) {
	node := j.header.Clevis.SSS
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
	if s != nil {
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
			share, err := decrypt(ctx, []byte(child), opts, s)
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
