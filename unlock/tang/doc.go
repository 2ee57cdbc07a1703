// Package tang speaks the Tang protocol: the client (fetch and verify
// advertisements, recover with the blinded McCallum-Relyea exchange), the
// server (GET /adv, POST /rec/{kid} with tangd's status codes) and
// tangd-compatible key directories (generate, rotate, load).
package tang
