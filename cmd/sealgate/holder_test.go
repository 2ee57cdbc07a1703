package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/sealproxy/sealproxy/unlock/tang"
)

// plainHolderEnv makes this test binary the scan's control: it parses
// every key file of the directory the variable names into tang.JWKs (d as
// a string, as the server kept it before), prints "ready" and holds them
// until its stdin closes.
const plainHolderEnv = "SEALGATE_TEST_PLAIN_HOLDER"

func plainHolder(dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.jwk")) // with the rotated .*.jwk
	var keys []*tang.JWK
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		k, err := tang.ParseJWK(data)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		raw, _ := base64.RawURLEncoding.DecodeString(k.D)
		keys = append(keys, k)
		held = append(held, raw)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	runtime.KeepAlive(keys)
	os.Exit(0)
}

var held [][]byte
