package gate

import (
	"embed"
	"net/http"
)

// The operator page: static files that call the operator API with the
// token the operator types in. They need no authentication themselves;
// everything they show comes through the API.
//
//go:embed web/index.html web/app.js web/app.css
var webFiles embed.FS

var webPaths = map[string]string{
	"/gate/":        "web/index.html",
	"/gate/app.js":  "web/app.js",
	"/gate/app.css": "web/app.css",
}

var webContentTypes = map[string]string{
	"web/index.html": "text/html; charset=utf-8",
	"web/app.js":     "text/javascript; charset=utf-8",
	"web/app.css":    "text/css; charset=utf-8",
}

// handleWeb serves the operator page under a strict content security
// policy: only its own script and style, API calls only to this origin,
// never framed.
func handleWeb(w http.ResponseWriter, r *http.Request) bool {
	name, ok := webPaths[r.URL.Path]
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	data, err := webFiles.ReadFile(name)
	if err != nil {
		return false
	}
	h := w.Header()
	h.Set("Content-Type", webContentTypes[name])
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.Write(data)
	return true
}
