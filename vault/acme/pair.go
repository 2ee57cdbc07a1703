package acme

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/sealproxy/sealproxy/internal/atomicfile"
	"github.com/sealproxy/sealproxy/proxy/config"
	"github.com/sealproxy/sealproxy/vault/keyref"
)

// A new pair is written so that a crash at any point leaves the old
// pair or the new one on disk, never a key beside another key's
// certificate:
//
//  1. KEY.next, the sealed key (atomic: synced, renamed, directory synced);
//  2. CERT.next, the chain, last: it is the commit marker. Its first line
//     records the SHA-256 of the sealed key's bytes it goes with (text
//     before the first PEM block, which PEM readers skip), because a JWE
//     shows nothing of its key's public half without unsealing;
//  3. KEY.next renamed over KEY, then CERT.next over CERT.
//
// finishPair, at start-up, at each reload and before each renewal,
// completes a committed pair (CERT.next present, its recorded digest
// that of KEY.next or, once renamed, of KEY) and removes an uncommitted
// or mismatched one, leaving the old pair.

const stagedSuffix = ".next"

// pairDigestPrefix starts a certificate's first line naming its sealed key.
const pairDigestPrefix = "sealproxy sealed key sha256 "

// pairMu keeps this process's writers and recoveries of staged pairs
// from interleaving (a reload recovers while the manager writes).
var pairMu sync.Mutex

// crashHook, in tests, stops writePair after a step as a crash would:
// nothing is cleaned up.
var crashHook func(step string) bool

func crashed(step string) bool { return crashHook != nil && crashHook(step) }

var errCrash = errors.New("crash injected by a test")

// writePair writes the sealed key and the chain as a staged pair and
// puts it in place. A write error before the commit marker leaves the
// old pair (the staged files are removed); after it, finishPair
// completes the pair now or at the next start-up.
func writePair(keyPath string, jwe []byte, certPath string, chain [][]byte) error {
	pairMu.Lock()
	defer pairMu.Unlock()
	// Whatever an earlier attempt left is finished or removed first.
	if _, err := finishPair(keyPath, certPath); err != nil {
		return &writeError{err}
	}
	keyNext, certNext := keyPath+stagedSuffix, certPath+stagedSuffix
	sum := sha256.Sum256(jwe)
	certPEM := []byte(pairDigestPrefix + hex.EncodeToString(sum[:]) + "\n")
	for _, der := range chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	if err := atomicfile.Write(keyNext, jwe, 0o600); err != nil {
		return &writeError{fmt.Errorf("writing the sealed key: %w", err)}
	}
	if crashed("key staged") {
		return errCrash
	}
	if err := atomicfile.Write(certNext, certPEM, 0o644); err != nil {
		_ = os.Remove(keyNext)
		return &writeError{fmt.Errorf("writing the certificate: %w", err)}
	}
	if crashed("cert staged") {
		return errCrash
	}
	if _, err := finishPair(keyPath, certPath); err != nil {
		return &writeError{err}
	}
	return nil
}

// finishPair completes or removes the staged pair of keyPath and
// certPath; done reports that a staged pair was put in place.
func finishPair(keyPath, certPath string) (done bool, err error) {
	keyNext, certNext := keyPath+stagedSuffix, certPath+stagedSuffix
	removeTemps(keyNext, certNext)
	staged, err := os.ReadFile(certNext)
	if errors.Is(err, fs.ErrNotExist) {
		// Not committed: the old pair stays.
		if err := os.Remove(keyNext); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("removing the uncommitted sealed key: %w", err)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the staged certificate: %w", err)
	}
	want, ok := stagedDigest(staged)
	discard := func(why string) (bool, error) {
		_ = os.Remove(keyNext)
		if err := os.Remove(certNext); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("removing a staged certificate that %s: %w", why, err)
		}
		return false, nil
	}
	if !ok {
		return discard("names no sealed key")
	}
	if next, err := os.ReadFile(keyNext); err == nil {
		if sha256.Sum256(next) != want {
			return discard("is not for the staged sealed key")
		}
		if err := os.Rename(keyNext, keyPath); err != nil {
			return false, fmt.Errorf("putting the sealed key in place: %w", err)
		}
		syncDir(filepath.Dir(keyPath))
		if crashed("key renamed") {
			return false, errCrash
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("reading the staged sealed key: %w", err)
	} else if cur, err := os.ReadFile(keyPath); err != nil || sha256.Sum256(cur) != want {
		// The key in place is not the one certified (another writer's
		// leftover): keep the pair in place.
		return discard("is not for the sealed key in place")
	}
	if err := os.Rename(certNext, certPath); err != nil {
		return false, fmt.Errorf("putting the certificate in place: %w", err)
	}
	syncDir(filepath.Dir(certPath))
	return true, nil
}

// stagedDigest reads the sealed key's digest from a staged
// certificate's first line.
func stagedDigest(cert []byte) (sum [sha256.Size]byte, ok bool) {
	line, _, _ := bufio.NewReader(bytes.NewReader(cert)).ReadLine()
	h, found := bytes.CutPrefix(line, []byte(pairDigestPrefix))
	if !found || hex.DecodedLen(len(h)) != sha256.Size {
		return sum, false
	}
	if _, err := hex.Decode(sum[:], h); err != nil {
		return sum, false
	}
	return sum, true
}

// removeTemps removes atomicfile's temporaries of the staged files
// that a crash left (sealed or public: nothing in the clear).
func removeTemps(paths ...string) {
	for _, p := range paths {
		dir, prefix := filepath.Dir(p), "."+filepath.Base(p)+"."
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if n := e.Name(); strings.HasPrefix(n, prefix) && strings.HasSuffix(n, ".tmp") && !e.IsDir() {
				_ = os.Remove(filepath.Join(dir, n))
			}
		}
	}
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // not every platform syncs a directory
		d.Close()
	}
}

// Recover completes or removes the staged pairs of cfg's ACME keys that
// a crash left: the daemon calls it before it opens keys, at start-up
// and at each reload.
func Recover(cfg *config.Config, log *slog.Logger) {
	pairMu.Lock()
	defer pairMu.Unlock()
	for _, k := range cfg.ACMEKeys() {
		ref, err := keyref.Parse(k.Source)
		if err != nil || !ref.IsSealed() {
			continue
		}
		keyPath, certPath := cfg.Resolve(ref.Path), cfg.Resolve(k.Cert)
		done, err := finishPair(keyPath, certPath)
		switch {
		case err != nil:
			log.Warn("a staged ACME pair could not be finished; the pair in place stays", "key", k.Name, "err", err)
		case done:
			log.Info("finished putting a staged ACME pair in place", "key", k.Name, "cert", certPath)
		}
	}
}
