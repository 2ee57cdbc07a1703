// Package acme issues and renews the certificates of [key.acme] keys
// with an ACME CA (RFC 8555), their private keys born in custody: each
// new key is generated in the vault's sealed box and written only as a
// Clevis JWE sealed with the configured pin, next to its certificate;
// the daemon then swaps the pair in as a run-time change.
//
// It is our own small manager, not x/crypto/acme/autocert: autocert
// keeps every private key in its Cache as PEM, in the clear.
package acme

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"reflect"
	"slices"
	"sync"
	"time"

	xacme "golang.org/x/crypto/acme"

	"github.com/sealproxy/sealproxy/internal/atomicfile"
	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/tang"
	"github.com/sealproxy/sealproxy/vault"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

// Challenges is where the manager puts the answers the data plane gives
// (proxy.Challenges).
type Challenges interface {
	SetTLSALPN(name string, cert *tls.Certificate)
	ClearTLSALPN(name string)
	SetHTTP(token, keyAuth string)
	ClearHTTP(token string)
}

// Results counted in sealproxy_acme_renewals_total{result}.
const (
	ResultSuccess         = "success"
	ResultTangUnreachable = "tang_unreachable" // the new key could not be sealed: nothing written
	ResultCA              = "ca_error"         // the CA refused, failed or was unreachable
	ResultWrite           = "write_error"      // the sealed key or certificate could not be written
	ResultSwap            = "swap_error"       // written, but the reload that swaps it in failed
	ResultError           = "error"
)

// Options wire a Manager to the daemon.
type Options struct {
	Log        *slog.Logger
	Challenges Challenges
	// Swap makes key, now sealed to k's source next to k's certificate,
	// the key of k's name for new handshakes (keyring Stage, Adopt and a
	// reload); open connections keep theirs.
	Swap func(ctx context.Context, k *config.Key, key vault.Key) error
	// Result counts one attempt of key k ending with result.
	Result func(key, result string)
	// Unlock recovers the account key and the EAB key (the gate's code
	// goes to OnPending); nil uses unlock's defaults.
	Unlock *unlock.Options
	// Timeout bounds one attempt (default 10 minutes).
	Timeout time.Duration
}

// Manager keeps the ACME keys of one configuration certified.
type Manager struct {
	o   Options
	log *slog.Logger

	mu       sync.Mutex
	cfg      *config.Config           // the last applied; Update replaces it
	accounts map[string]*xacme.Client // by account file
	changed  chan struct{}            // Update wakes Run (coalesced)
}

// New returns a manager for cfg's [key.acme] keys.
func New(cfg *config.Config, o Options) *Manager {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Result == nil {
		o.Result = func(string, string) {}
	}
	log = log.With("component", "acme")
	if o.Unlock == nil {
		// A gate holding the account key's recovery: the operator
		// compares this code (the gate validated its format).
		o.Unlock = &unlock.Options{OnPending: func(p tang.Pending) {
			log.Warn("waiting for approval of the ACME account key", "code", p.Code, "tang_url", p.URL)
		}}
	}
	return &Manager{cfg: cfg, o: o, log: log, accounts: map[string]*xacme.Client{}, changed: make(chan struct{}, 1)}
}

// Update hands the manager a reloaded configuration: a key whose
// [[key]] entry (its [key.acme] table, cert or source) changed is
// rescheduled with the new settings (an attempt under way for it is
// abandoned first), a new ACME key starts, a removed one stops. It does
// not block.
func (m *Manager) Update(cfg *config.Config) {
	m.mu.Lock()
	m.cfg = cfg
	m.mu.Unlock()
	select {
	case m.changed <- struct{}{}:
	default: // a wake-up is pending: Run reads the latest
	}
}

func (m *Manager) config() *config.Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg
}

// Run keeps every ACME key certified until ctx ends: each is renewed
// when due, and a failed attempt is retried with backoff while the old
// pair keeps serving.
func (m *Manager) Run(ctx context.Context) {
	type keeper struct {
		key    config.Key
		dir    string
		cancel context.CancelFunc
		done   chan struct{}
	}
	running := map[string]*keeper{}
	stop := func(kp *keeper) { kp.cancel(); <-kp.done }
	for {
		cfg := m.config()
		want := map[string]*config.Key{}
		for _, k := range cfg.ACMEKeys() {
			want[k.Name] = k
		}
		for name, kp := range running {
			// Stopped before its successor starts: two attempts for one
			// key never run at once.
			if k := want[name]; k == nil || kp.dir != cfg.Dir || !sameACME(&kp.key, k) {
				stop(kp)
				delete(running, name)
			}
		}
		for name, k := range want {
			if running[name] != nil {
				continue
			}
			kctx, cancel := context.WithCancel(ctx)
			kp := &keeper{key: *k, dir: cfg.Dir, cancel: cancel, done: make(chan struct{})}
			running[name] = kp
			go func() {
				defer close(kp.done)
				m.keep(kctx, k)
			}()
		}
		select {
		case <-ctx.Done():
			for _, kp := range running {
				stop(kp)
			}
			return
		case <-m.changed:
		}
	}
}

func (m *Manager) keep(ctx context.Context, k *config.Key) {
	log := m.log.With("key", k.Name)
	var failures int
	for {
		due, backoff, by := m.schedule(ctx, k)
		if failures > 0 {
			due = time.Now().Add(backoffAfter(backoff, failures))
		}
		if d := time.Until(due); d > 0 {
			if failures > 0 {
				by = "backoff"
			}
			log.Info("next ACME renewal", "at", due.UTC().Format(time.RFC3339), "by", by)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		err := m.Renew(ctx, k)
		result := Classify(err)
		m.o.Result(k.Name, result)
		if err == nil {
			failures = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		log.Warn("ACME renewal failed; the current certificate keeps serving, retrying", "result", result, "attempt", failures, "err", err)
	}
}

// sameACME reports whether a and b are the same ACME key to the
// manager (OCSP settings do not matter to it).
func sameACME(a, b *config.Key) bool {
	return a.Cert == b.Cert && a.Source == b.Source && reflect.DeepEqual(a.ACME, b.ACME)
}

// backoffAfter doubles first for each failure, up to 64 times first.
func backoffAfter(first time.Duration, failures int) time.Duration {
	d := first << min(failures-1, 6)
	return d/2 + mrand.N(d/2+1) // jitter: keys and hosts do not retry in step
}

// Classify maps an attempt's error to its result label.
func Classify(err error) string {
	var ae *xacme.Error
	var oe *xacme.OrderError
	var we *writeError
	switch {
	case err == nil:
		return ResultSuccess
	case errors.Is(err, tang.ErrUnreachable):
		return ResultTangUnreachable
	case errors.As(err, &we):
		return ResultWrite
	case errors.Is(err, errSwap):
		return ResultSwap
	case errors.As(err, &ae), errors.As(err, &oe), errors.Is(err, errCA):
		return ResultCA
	}
	return ResultError
}

var (
	errSwap = errors.New("swapping the new pair in")
	errCA   = errors.New("ACME CA")
)

type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// schedule returns when k is due and the first backoff of a failed
// attempt: now when k has no certificate or one that misses a
// configured name; else two-thirds into its
// lifetime, or within the CA's ARI window (RFC 9773) when it offers one.
// The backoff scales with the lifetime (between a second and a minute),
// so that a short-lived certificate is retried several times before it
// expires.
func (m *Manager) schedule(ctx context.Context, k *config.Key) (due time.Time, backoff time.Duration, by string) {
	leaf, err := config.ReadLeaf(m.config().Resolve(k.Cert))
	if err != nil || m.config().Pending(k) {
		return time.Now(), 5 * time.Second, "first issue"
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	backoff = min(max(life/100, time.Second), time.Minute)
	for _, n := range k.ACME.Names {
		if leaf.VerifyHostname(n) != nil {
			// A name added to [key.acme]: the certificate does not cover it.
			return time.Now(), backoff, "names changed"
		}
	}
	if w, ok := m.renewalWindow(ctx, k, leaf); ok {
		return w, backoff, "ari"
	}
	return leaf.NotBefore.Add(life * 2 / 3), backoff, "two-thirds"
}

// Renew issues a new certificate for k now: a new key generated and
// sealed in custody (nothing written if sealing fails), the order and
// its challenges, the sealed key and the chain written atomically, and
// the swap.
func (m *Manager) Renew(ctx context.Context, k *config.Key) error {
	ctx, cancel := context.WithTimeout(ctx, m.o.Timeout)
	defer cancel()
	a := k.ACME
	log := m.log.With("key", k.Name)
	ref, err := keyref.Parse(k.Source)
	if err != nil || !ref.IsSealed() {
		return fmt.Errorf("key %q: the source of an ACME key must be sealed:PATH", k.Name)
	}
	keyPath := m.config().Resolve(ref.Path)

	// Seal first: with Tang down nothing is ordered and nothing written.
	var jwe []byte
	key, err := vault.Generate(ref.String(), a.KeyType, func(pemKey []byte) error {
		var err error
		jwe, err = unlock.Encrypt(ctx, a.SealPin, []byte(a.Seal), pemKey, nil)
		if err != nil {
			return fmt.Errorf("sealing the new key of %q: %w", k.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	swapped := false
	defer func() {
		if !swapped {
			key.Close()
		}
	}()

	client, err := m.client(ctx, k)
	if err != nil {
		return err
	}
	chain, err := m.order(ctx, client, k, key, log)
	if err != nil {
		// The next attempt registers again: a CA that lost its state
		// (restarted, or the account deactivated) knows us again.
		m.mu.Lock()
		delete(m.accounts, accountID(a))
		m.mu.Unlock()
		return err
	}
	certPath := m.config().Resolve(k.Cert)
	if err := writePair(keyPath, jwe, certPath, chain); err != nil {
		return err
	}
	leaf, _ := x509.ParseCertificate(chain[0])
	log.Info("ACME certificate written; swapping it in", "serial", leaf.SerialNumber.Text(16),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	if err := m.o.Swap(ctx, k, key); err != nil {
		// Adopted keys belong to the ring, which closes them.
		swapped = true
		return fmt.Errorf("%w: %w", errSwap, err)
	}
	swapped = true
	return nil
}

// order runs one order for k's names and returns the chain, leaf first,
// certifying key.
func (m *Manager) order(ctx context.Context, client *xacme.Client, k *config.Key, key crypto.Signer, log *slog.Logger) ([][]byte, error) {
	a := k.ACME
	var opts []xacme.OrderOption
	if a.Profile != "" {
		opts = append(opts, xacme.WithOrderIssuanceProfile(xacme.ProfileName(a.Profile)))
	}
	o, err := client.AuthorizeOrder(ctx, xacme.DomainIDs(a.Names...), opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: creating the order: %w", errCA, err)
	}
	for _, u := range o.AuthzURLs {
		if err := m.authorize(ctx, client, a, u, log); err != nil {
			return nil, err
		}
	}
	if _, err = client.WaitOrder(ctx, o.URI); err != nil {
		return nil, fmt.Errorf("%w: waiting for the order: %w", errCA, err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: a.Names[0]}, DNSNames: a.Names,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("signing the CSR: %w", err)
	}
	chain, _, err := client.CreateCertFromOrder(ctx, o, csr, true)
	if err != nil {
		return nil, fmt.Errorf("%w: finalizing the order: %w", errCA, err)
	}
	if err := checkChain(chain, key, a.Names); err != nil {
		return nil, fmt.Errorf("%w: %w", errCA, err)
	}
	return chain, nil
}

// checkChain refuses a chain whose leaf is not for key and names.
func checkChain(chain [][]byte, key crypto.Signer, names []string) error {
	if len(chain) == 0 {
		return errors.New("the CA returned no certificate")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return fmt.Errorf("parsing the issued certificate: %w", err)
	}
	if err := vault.CheckCertificate(key, leaf); err != nil {
		return fmt.Errorf("the issued certificate: %w", err)
	}
	for _, n := range names {
		if err := leaf.VerifyHostname(n); err != nil {
			return fmt.Errorf("the issued certificate does not cover %q", n)
		}
	}
	return nil
}

// authorize answers one authorization's challenge of the configured
// type and waits until the CA validated it.
func (m *Manager) authorize(ctx context.Context, client *xacme.Client, a *config.ACME, url string, log *slog.Logger) error {
	z, err := client.GetAuthorization(ctx, url)
	if err != nil {
		return fmt.Errorf("%w: reading an authorization: %w", errCA, err)
	}
	if z.Status == xacme.StatusValid {
		return nil
	}
	i := slices.IndexFunc(z.Challenges, func(c *xacme.Challenge) bool { return c.Type == a.Challenge })
	if i < 0 {
		return fmt.Errorf("%w: the CA offers no %s challenge for %q", errCA, a.Challenge, z.Identifier.Value)
	}
	chal := z.Challenges[i]
	name := z.Identifier.Value
	if !slices.Contains(a.Names, name) {
		return fmt.Errorf("%w: an authorization for a name not ordered", errCA)
	}
	switch a.Challenge {
	case config.ChallengeTLSALPN:
		cert, err := client.TLSALPN01ChallengeCert(chal.Token, name)
		if err != nil {
			return fmt.Errorf("making the tls-alpn-01 certificate: %w", err)
		}
		m.o.Challenges.SetTLSALPN(name, &cert)
		defer m.o.Challenges.ClearTLSALPN(name)
	case config.ChallengeHTTP:
		ka, err := client.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return fmt.Errorf("making the http-01 answer: %w", err)
		}
		m.o.Challenges.SetHTTP(chal.Token, ka)
		defer m.o.Challenges.ClearHTTP(chal.Token)
	}
	log.Info("answering ACME challenge", "type", a.Challenge, "name", name)
	if _, err := client.Accept(ctx, chal); err != nil {
		return fmt.Errorf("%w: accepting the %s challenge for %q: %w", errCA, a.Challenge, name, err)
	}
	if _, err := client.WaitAuthorization(ctx, z.URI); err != nil {
		return fmt.Errorf("%w: %s validation of %q: %w", errCA, a.Challenge, name, err)
	}
	return nil
}

// client returns the registered ACME client of k's account, opening or
// creating (and sealing) the account key on first use.
func (m *Manager) client(ctx context.Context, k *config.Key) (*xacme.Client, error) {
	a := k.ACME
	m.mu.Lock()
	c := m.accounts[accountID(a)]
	m.mu.Unlock()
	if c != nil {
		return c, nil
	}
	hc, err := m.httpClient(a)
	if err != nil {
		return nil, err
	}
	key, created, err := m.accountKey(ctx, a)
	if err != nil {
		return nil, err
	}
	c = &xacme.Client{Key: key, DirectoryURL: a.Directory, HTTPClient: hc, UserAgent: "sealproxy"}
	acct := &xacme.Account{}
	if a.Email != "" {
		acct.Contact = []string{"mailto:" + a.Email}
	}
	if a.EABKID != "" {
		eab, err := m.eab(ctx, a)
		if err != nil {
			key.Close()
			return nil, err
		}
		acct.ExternalAccountBinding = eab
		defer secmem.Bytes(eab.Key)
	}
	if _, err := c.Register(ctx, acct, xacme.AcceptTOS); err != nil && !errors.Is(err, xacme.ErrAccountAlreadyExists) {
		if !created {
			key.Close()
		}
		return nil, fmt.Errorf("%w: registering the account: %w", errCA, err)
	}
	m.mu.Lock()
	m.accounts[accountID(a)] = c
	m.mu.Unlock()
	return c, nil
}

func accountID(a *config.ACME) string { return a.Account + "\x00" + a.Directory }

// accountKey recovers the sealed account key like any sealed key
// (through Tang and any gate), or creates it in custody and writes it
// sealed when its file does not exist.
func (m *Manager) accountKey(ctx context.Context, a *config.ACME) (vault.Key, bool, error) {
	ref, err := keyref.Parse(a.Account)
	if err != nil {
		return nil, false, err
	}
	cfg := m.config()
	path := cfg.Resolve(ref.Path)
	opts := &vault.Options{BaseDir: cfg.Dir, AllowUnprotectedMemory: cfg.AllowUnprotectedMemory,
		Log: m.log, Unlock: m.o.Unlock}
	if _, err := os.Stat(path); err == nil {
		key, err := vault.Open(ctx, a.Account, opts)
		if err != nil {
			return nil, false, fmt.Errorf("opening the ACME account key: %w", err)
		}
		return key, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("the ACME account key: %w", err)
	}
	key, err := vault.Generate(ref.String(), vault.KeyECDSAP256, func(pemKey []byte) error {
		jwe, err := unlock.Encrypt(ctx, a.SealPin, []byte(a.Seal), pemKey, nil)
		if err != nil {
			return fmt.Errorf("sealing the new ACME account key: %w", err)
		}
		if err := atomicfile.Write(path, jwe, 0o600); err != nil {
			return &writeError{fmt.Errorf("writing the ACME account key: %w", err)}
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	m.log.Info("ACME account key created and sealed", "file", path)
	return key, true, nil
}

// eab recovers the external account binding's MAC key (sealed, as the
// base64url text CAs hand out).
func (m *Manager) eab(ctx context.Context, a *config.ACME) (*xacme.ExternalAccountBinding, error) {
	ref, err := keyref.Parse(a.EABKey)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(m.config().Resolve(ref.Path))
	if err != nil {
		return nil, fmt.Errorf("reading eab_key: %w", err)
	}
	buf, err := unlock.Decrypt(ctx, data, m.o.Unlock)
	if err != nil {
		return nil, fmt.Errorf("recovering eab_key: %w", err)
	}
	defer buf.Destroy()
	text := buf.Bytes()
	for len(text) > 0 && (text[len(text)-1] == '\n' || text[len(text)-1] == '\r') {
		text = text[:len(text)-1]
	}
	key := make([]byte, base64.RawURLEncoding.DecodedLen(len(text)))
	n, err := base64.RawURLEncoding.Decode(key, text)
	if err != nil {
		secmem.Bytes(key)
		return nil, errors.New("eab_key: want the MAC key as base64url text (as the CA hands it out)")
	}
	return &xacme.ExternalAccountBinding{KID: a.EABKID, Key: key[:n]}, nil
}

// maxCA bounds the ca file.
const maxCA = 1 << 20

func (m *Manager) httpClient(a *config.ACME) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if a.CA != "" {
		f, err := os.Open(m.config().Resolve(a.CA))
		if err != nil {
			return nil, fmt.Errorf("[key.acme] ca: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(f, maxCA))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("[key.acme] ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("[key.acme] ca %s: no PEM certificate", a.CA)
		}
		tc.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.Proxy = nil
	return &http.Client{Transport: tr, Timeout: time.Minute}, nil
}

// renewalWindow asks the CA's ARI endpoint (RFC 9773), when its
// directory offers one, when to renew leaf: a random time in the
// suggested window. ok is false without ARI or on any error (the caller
// then renews at two-thirds of the lifetime).
func (m *Manager) renewalWindow(ctx context.Context, k *config.Key, leaf *x509.Certificate) (time.Time, bool) {
	if len(leaf.AuthorityKeyId) == 0 {
		return time.Time{}, false
	}
	hc, err := m.httpClient(k.ACME)
	if err != nil {
		return time.Time{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var dir struct {
		RenewalInfo string `json:"renewalInfo"`
	}
	if err := getJSON(ctx, hc, k.ACME.Directory, &dir); err != nil || dir.RenewalInfo == "" {
		return time.Time{}, false
	}
	id := base64.RawURLEncoding.EncodeToString(leaf.AuthorityKeyId) + "." +
		base64.RawURLEncoding.EncodeToString(serialBytes(leaf))
	var info struct {
		SuggestedWindow struct {
			Start time.Time `json:"start"`
			End   time.Time `json:"end"`
		} `json:"suggestedWindow"`
	}
	if err := getJSON(ctx, hc, dir.RenewalInfo+"/"+id, &info); err != nil {
		return time.Time{}, false
	}
	w := info.SuggestedWindow
	if w.Start.IsZero() || !w.End.After(w.Start) || w.Start.After(leaf.NotAfter) {
		return time.Time{}, false
	}
	return w.Start.Add(mrand.N(w.End.Sub(w.Start))), true
}

// serialBytes is the DER content of leaf's serial number (RFC 9773
// section 4.1: with a leading zero when the high bit is set).
func serialBytes(leaf *x509.Certificate) []byte {
	b := leaf.SerialNumber.Bytes()
	if len(b) == 0 || b[0]&0x80 != 0 {
		b = append([]byte{0}, b...)
	}
	return b
}

// maxJSON bounds a directory or ARI answer.
const maxJSON = 64 << 10

func getJSON(ctx context.Context, hc *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, maxJSON)).Decode(v)
}
