package tang

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
)

// maxRecoveryRequest bounds a /rec request body: one JWK point.
const maxRecoveryRequest = 4 << 10

// Server serves the Tang protocol (GET /adv, GET /adv/{thp},
// POST /rec/{kid}) with tangd's status codes.
type Server struct {
	keys KeySource
	log  *slog.Logger
	mux  *http.ServeMux
}

// NewServer returns a Tang server for keys: a *Keys, or a *KeyDir that
// follows rotations. A nil logger discards logs.
func NewServer(keys KeySource, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{keys: keys, log: log, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /adv", s.handleAdv)
	s.mux.HandleFunc("GET /adv/{$}", s.handleAdv)
	s.mux.HandleFunc("GET /adv/{thp}", s.handleAdv)
	s.mux.HandleFunc("POST /rec/{kid}", s.handleRec)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) handleAdv(w http.ResponseWriter, r *http.Request) {
	thp := r.PathValue("thp")
	keys, err := s.current(r)
	if err != nil {
		s.reply(w, r, http.StatusInternalServerError, "", nil, slog.Any("err", err))
		return
	}
	adv, err := keys.Advertisement(thp)
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, ErrUnknownKey) {
			status = http.StatusNotFound
		}
		s.reply(w, r, status, "", nil, slog.String("thp", thp), slog.Any("err", err))
		return
	}
	s.reply(w, r, http.StatusOK, "application/jose+json", adv, slog.String("thp", thp))
}

func (s *Server) handleRec(w http.ResponseWriter, r *http.Request) {
	kid := r.PathValue("kid")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRecoveryRequest))
	if err != nil {
		s.reply(w, r, http.StatusBadRequest, "", nil, slog.String("kid", kid), slog.String("err", "request body too large or unreadable"))
		return
	}
	var x JWK
	if err := json.Unmarshal(body, &x); err != nil || x.D != "" || (x.Alg != "" && x.Alg != AlgExchange) {
		s.reply(w, r, http.StatusBadRequest, "", nil, slog.String("kid", kid), slog.String("err", "request is not an ECMR public JWK"))
		return
	}
	keys, err := s.current(r)
	if err != nil {
		s.reply(w, r, http.StatusInternalServerError, "", nil, slog.String("kid", kid), slog.Any("err", err))
		return
	}
	y, err := keys.Recover(kid, &x)
	status := http.StatusOK
	switch {
	case errors.Is(err, ErrUnknownKey):
		status = http.StatusNotFound
	case errors.Is(err, ErrWrongKeyUse):
		status = http.StatusForbidden
	case errors.Is(err, ErrBadExchange), errors.Is(err, ErrBadKey):
		status = http.StatusBadRequest
	case err != nil:
		status = http.StatusInternalServerError
	}
	if err != nil {
		s.reply(w, r, status, "", nil, slog.String("kid", kid), slog.Any("err", err))
		return
	}
	out, err := json.Marshal(y)
	if err != nil {
		s.reply(w, r, http.StatusInternalServerError, "", nil, slog.String("kid", kid), slog.Any("err", err))
		return
	}
	s.reply(w, r, http.StatusOK, "application/jwk+json", out, slog.String("kid", kid))
}

// current returns the keys to serve with. A key directory that fails to
// re-read keeps serving its previous keys; the failure is logged.
func (s *Server) current(r *http.Request) (*Keys, error) {
	keys, err := s.keys.Keys()
	if err != nil && keys != nil {
		s.log.LogAttrs(r.Context(), slog.LevelError, "reloading tang keys failed; serving the previous keys", slog.Any("err", err))
		return keys, nil
	}
	return keys, err
}

func (s *Server) reply(w http.ResponseWriter, r *http.Request, status int, ctype string, body []byte, attrs ...slog.Attr) {
	Reply(s.log, "tang request", w, r, status, ctype, body, attrs...)
}

// Reply writes an answer and logs it as msg with the request's method,
// path, status and remote address (and attrs). Shared with the gate, so
// both log requests alike; callers never pass secrets in attrs.
func Reply(log *slog.Logger, msg string, w http.ResponseWriter, r *http.Request, status int, ctype string, body []byte, attrs ...slog.Attr) {
	if ctype != "" {
		w.Header().Set("Content-Type", ctype)
	}
	w.WriteHeader(status)
	w.Write(body)
	level := slog.LevelInfo
	if status >= 400 {
		level = slog.LevelWarn
	}
	attrs = append([]slog.Attr{
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", status), slog.String("remote", r.RemoteAddr),
	}, attrs...)
	log.LogAttrs(r.Context(), level, msg, attrs...)
}
