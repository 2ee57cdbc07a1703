package main

import (
	"bytes"
	"context"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/sealproxy/sealproxy/testenv"
)

// TestDemo runs the whole demo unattended: it must finish by itself and
// show a round trip, a reload and a clean stop.
func TestDemo(t *testing.T) {
	testenv.SkipIfShort(t, "builds and runs sealproxy")
	if _, err := exec.LookPath("go"); err != nil && runtime.GOOS == "windows" {
		// Under Wine (make test-windows) there is no Windows Go toolchain.
		t.Skip("builds sealproxy with the go command, and there is none on PATH")
	}
	var out bytes.Buffer
	if err := run(context.Background(), &out, false); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"no key file in the clear",
		"waiting for approval (code ",
		"without a code; the operator types the code the host shows",
		"msg=\"key unlocked\" key=web",
		"5. GET https://demo.sealproxy.test/hello",
		"<- echo from the backend: GET /hello",
		"6. SIGHUP: reloaded",
		"openssl s_client -connect 127.0.0.1:",
		"7. SIGTERM: STOPPING=1",
		"demo: ok",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "PRIVATE KEY") {
		t.Error("the demo shows key material")
	}
}
