package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sealproxy/sealproxy/proxy/config"
)

// ACMETLSALPN is the ALPN protocol of the tls-alpn-01 challenge (RFC 8737).
const ACMETLSALPN = "acme-tls/1"

// ErrPending reports a key whose first ACME issue has not happened yet:
// listeners serve without it.
var ErrPending = errors.New("awaiting its first ACME certificate")

// Challenges holds the answers to the ACME challenges pending now, for
// the data plane to give: a tls-alpn-01 certificate per name (served to a
// ClientHello that offers only ALPN acme-tls/1 for that name, on the
// listeners using the key) and an http-01 key authorization per token.
// The ACME manager fills it; it holds nothing secret (a challenge
// certificate's key is throwaway, and key authorizations are public).
type Challenges struct {
	mu   sync.RWMutex
	alpn map[string]*tls.Certificate // lower-case name → challenge certificate
	http map[string]string           // token → key authorization
}

// NewChallenges returns an empty store.
func NewChallenges() *Challenges {
	return &Challenges{alpn: map[string]*tls.Certificate{}, http: map[string]string{}}
}

// SetTLSALPN serves cert to tls-alpn-01 validations of name until
// ClearTLSALPN.
func (c *Challenges) SetTLSALPN(name string, cert *tls.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.alpn[lowerASCII(name)] = cert
}

// ClearTLSALPN stops answering tls-alpn-01 for name.
func (c *Challenges) ClearTLSALPN(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.alpn, lowerASCII(name))
}

// SetHTTP answers GET /.well-known/acme-challenge/TOKEN with keyAuth
// until ClearHTTP.
func (c *Challenges) SetHTTP(token, keyAuth string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.http[token] = keyAuth
}

// ClearHTTP stops answering token.
func (c *Challenges) ClearHTTP(token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.http, token)
}

// alpnConfig returns the TLS configuration that answers a tls-alpn-01
// validation, or nil when hello is not one (RFC 8737 section 3: the
// validator offers acme-tls/1 and nothing else) or no challenge for its
// name is pending.
func (c *Challenges) alpnConfig(hello *tls.ClientHelloInfo) *tls.Config {
	if len(hello.SupportedProtos) != 1 || hello.SupportedProtos[0] != ACMETLSALPN {
		return nil
	}
	c.mu.RLock()
	cert := c.alpn[lowerASCII(strings.TrimSuffix(hello.ServerName, "."))]
	c.mu.RUnlock()
	if cert == nil {
		return nil
	}
	return &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{ACMETLSALPN}, MinVersion: tls.VersionTLS12}
}

// AnswerACME makes the listeners of cfg that use a tls-alpn-01 ACME key
// answer its validations from c. A connection that negotiated
// acme-tls/1 is closed after the handshake: it never reaches a backend.
func AnswerACME(listeners []*ListenerConfig, cfg *config.Config, c *Challenges) {
	uses := map[string]bool{}
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		for _, n := range l.Keys {
			if k := cfg.Key(n); k != nil && k.ACME != nil && k.ACME.Challenge == config.ChallengeTLSALPN && l.Mode != config.ModeEncrypt {
				uses[l.Name] = true
			}
		}
	}
	for _, lc := range listeners {
		if !uses[lc.Name] || lc.TLS == nil {
			continue
		}
		next := lc.TLS.GetConfigForClient
		lc.TLS.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if tc := c.alpnConfig(hello); tc != nil {
				return tc, nil
			}
			if next != nil {
				return next(hello)
			}
			return nil, nil
		}
	}
}

// maxChallengeConns bounds the http-01 server's concurrent connections.
const maxChallengeConns = 64

// HTTPChallengeHandler answers GET and HEAD
// /.well-known/acme-challenge/TOKEN for the pending tokens; everything
// else is 404.
func (c *Challenges) HTTPChallengeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/")
		if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			http.NotFound(w, r)
			return
		}
		c.mu.RLock()
		ka, ok := c.http[token]
		c.mu.RUnlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(ka))
	})
}

// ServeHTTPChallenges answers http-01 validations on ln until ctx ends:
// small headers, short timeouts, at most maxChallengeConns connections.
func (c *Challenges) ServeHTTPChallenges(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           c.HTTPChallengeHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = srv.Shutdown(sctx)
			cancel()
		case <-done:
		}
	}()
	err := srv.Serve(&limitedListener{Listener: ln, slots: make(chan struct{}, maxChallengeConns)})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("http-01 listener %s: %w", ln.Addr(), err)
}

// limitedListener holds Accept while max connections are open.
type limitedListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitedListener) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &releasingConn{Conn: c, release: func() { <-l.slots }}, nil
}

type releasingConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *releasingConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
