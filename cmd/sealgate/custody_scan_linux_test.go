//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
	"github.com/sealproxy/sealproxy/unlock"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// TestTangKeysMemoryScan is the custody proof for the gate's own keys: a
// real sealgate (built with go build) serves recoveries, follows a
// rotation, signs advertisements with a rotated key, goes idle, and then
// its whole readable memory is searched for every private scalar of its
// key directory, raw (both byte orders), base64url as in the key files,
// and hex.
//
// Built with GOEXPERIMENT=runtimesecret, as sealgate should be, the scan
// must find nothing. Built without it, crypto/ecdsa's copies of the
// signing keys (made when advertisements are signed) stay in freed memory
// until it is reused; that build's counts are logged, not asserted.
func TestTangKeysMemoryScan(t *testing.T) {
	testenv.SkipIfShort(t, "builds sealgate twice and scans its memory")
	builds := []struct {
		name       string
		experiment string
		wantNone   bool
	}{
		{"runtimesecret", "runtimesecret", true},
		{"without-runtimesecret", "", false},
	}
	for _, b := range builds {
		t.Run(b.name, func(t *testing.T) {
			bin := testenv.BuildCommand(t, "sealgate", "GOEXPERIMENT="+b.experiment, "GOFLAGS=")
			modes := []string{"tang", "gate"}
			if !b.wantNone {
				modes = modes[:1]
			}
			for _, mode := range modes {
				t.Run(mode, func(t *testing.T) {
					counts, total := scanGate(t, bin, mode == "gate")
					t.Logf("sealgate built %s, serving as %s: %d occurrences %v", b.name, mode, total, counts)
					if b.wantNone && total != 0 {
						t.Errorf("sealgate's memory holds %d copies of its private scalars: %v", total, counts)
					}
				})
			}
		})
	}
}

// scanGate runs bin through keygen, serve, recoveries, a rotation and more
// recoveries, waits for it to go idle and returns the scan's counts. With
// gate it serves with --approval required and a policy that approves
// every local request, so the recoveries go through the gate's code.
func scanGate(t *testing.T, bin string, gate bool) (map[string]int, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "db")
	thp := strings.TrimSpace(runBin(t, bin, "keygen", "--dir", dir))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs bytes.Buffer
	args := []string{"serve", "--dir", dir, "--listen", addr}
	if gate {
		policy := filepath.Join(t.TempDir(), "policy.toml")
		if err := os.WriteFile(policy, []byte("[[rule]]\nname = \"local\"\naction = \"approve\"\nsources = [\"127.0.0.0/8\"]\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--approval", "required", "--policy", policy)
	}
	srv := exec.Command(bin, args...)
	srv.Stdout, srv.Stderr = &logs, &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
		if t.Failed() {
			t.Logf("sealgate's log:\n%s", logs.String())
		}
	})
	url := "http://" + addr
	client := &tang.Client{}
	for {
		if _, err := client.Advertisement(ctx, url, thp); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("sealgate did not serve: %v", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}

	recoverN := func(jwe []byte, n int) {
		t.Helper()
		for range n {
			buf, err := unlock.Decrypt(ctx, jwe, nil)
			if err != nil {
				t.Fatal(err)
			}
			buf.Destroy()
		}
	}
	seal := func(thp string) []byte {
		t.Helper()
		jwe, err := unlock.Encrypt(ctx, "tang", []byte(`{"url":"`+url+`","thp":"`+thp+`"}`), []byte("a secret"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return jwe
	}
	old := seal(thp)
	recoverN(old, 5)
	// The running server follows the rotation: it re-reads the directory.
	newThp := strings.TrimSpace(runBin(t, bin, "rotate", "--dir", dir))
	if _, err := client.Advertisement(ctx, url, newThp); err != nil {
		t.Fatal(err)
	}
	// Signed by the rotated signing key too.
	resp, err := http.Get(url + "/adv/" + thp)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /adv/%s: %s", thp, resp.Status)
	}
	recoverN(old, 5)
	recoverN(seal(newThp), 5)

	needles := scalarNeedles(t, dir)
	if len(needles) != 4*5 {
		t.Fatalf("%d needles from %s, want 4 keys × 5 encodings", len(needles), dir)
	}
	// The control: a process that holds the key files' JWKs as the
	// server used to (this test binary, see TestMain) shows them to the
	// same scan.
	holder := exec.Command(os.Args[0], "-test.run=^$")
	holder.Env = append(os.Environ(), plainHolderEnv+"="+dir)
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	ready, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	defer stdin.Close()
	if line, err := bufio.NewReader(ready).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("the control process did not start: %q, %v", line, err)
	}
	if plain, _ := testenv.ScanMemory(t, holder.Process.Pid, needles, false); sum(plain) == 0 {
		t.Fatal("the scan found no scalar in a process holding the key files as JWKs: the scan is broken")
	} else {
		t.Logf("control (JWKs held in the clear): %d occurrences %v", sum(plain), plain)
	}
	// serve hardened itself before reading its keys: no core dumps.
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", srv.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(limits)) {
		if f := strings.Fields(line); strings.HasPrefix(line, "Max core file size") && (len(f) < 6 || f[4] != "0" || f[5] != "0") {
			t.Errorf("sealgate serve may dump core: %s", strings.TrimSpace(line))
		}
	}
	// sealgate scrubs about 0.2 s after the last use of a key; scan until
	// the counts reach zero or a few seconds have passed.
	deadline := time.Now().Add(5 * time.Second)
	var counts map[string]int
	for {
		var scanned int64
		counts, scanned = testenv.ScanMemory(t, srv.Process.Pid, needles, false)
		if scanned == 0 {
			t.Fatal("scanned nothing")
		}
		if sum(counts) == 0 || time.Now().After(deadline) {
			t.Logf("scanned %d MiB of sealgate", scanned>>20)
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if sum(counts) != 0 {
		testenv.ScanMemory(t, srv.Process.Pid, needles, true) // log where
	}
	return counts, sum(counts)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func runBin(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		t.Fatalf("sealgate %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

type needle = testenv.Needle

// scalarNeedles reads every key file of dir (active and rotated) and
// returns each private scalar in the encodings that would betray it.
func scalarNeedles(t *testing.T, dir string) []needle {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.jwk")) // with the rotated .*.jwk
	if err != nil {
		t.Fatal(err)
	}
	var ns []needle
	for i, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var k struct {
			D   string `json:"d"`
			Alg string `json:"alg"`
		}
		if err := json.Unmarshal(data, &k); err != nil || k.D == "" {
			t.Fatalf("%s: no d (%v)", f, err)
		}
		raw, err := base64.RawURLEncoding.DecodeString(k.D)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("key %d (%s%s)", i, k.Alg, map[bool]string{true: ", rotated"}[strings.HasPrefix(filepath.Base(f), ".")])
		rev := slices.Clone(raw)
		slices.Reverse(rev)
		ns = append(ns,
			needle{Name: name + " raw big-endian", Bytes: raw},
			needle{Name: name + " raw little-endian", Bytes: rev},
			needle{Name: name + " base64url", Bytes: []byte(k.D)},
			needle{Name: name + " hex", Bytes: []byte(hex.EncodeToString(raw))},
			needle{Name: name + " HEX", Bytes: []byte(strings.ToUpper(hex.EncodeToString(raw)))},
		)
	}
	return ns
}
