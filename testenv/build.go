package testenv

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// builds caches BuildCommand's binaries for the life of the test binary.
var builds sync.Map // key string -> *build

type build struct {
	once sync.Once
	path string
	err  error
}

// BuildCommand compiles this module's ./cmd/NAME once per test binary
// (and per env) and returns the binary's path. env entries such as
// "GOEXPERIMENT=runtimesecret" or "GOFLAGS=" are added to the go
// command's environment; otherwise it inherits the test's. It skips when
// the go command is missing (fails under SEALPROXY_REQUIRE_INTEROP=1),
// and under -short: a test that builds a binary is a long one.
//
// The binary lives in the system temporary directory under a name made
// from NAME, env and the test's directory, replaced atomically by each
// test binary's first build: a fixed place, so repeated runs reuse it
// instead of leaving a copy each (a test binary has no hook to delete
// one at exit).
func BuildCommand(t testing.TB, name string, env ...string) string {
	t.Helper()
	SkipIfShort(t, "builds ./cmd/"+name)
	goTool := LookTool(t, "go", "golang-go")
	key := name + "\x00" + strings.Join(env, "\x00")
	v, _ := builds.LoadOrStore(key, &build{})
	b := v.(*build)
	b.once.Do(func() { b.path, b.err = buildCached(goTool, name, env) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func buildCached(goTool, name string, env []string) (string, error) {
	// The test's directory (its package's) keeps two checkouts, or two
	// packages building at once, from sharing a binary; the inherited
	// build settings keep a run with GOEXPERIMENT=runtimesecret (make
	// test's second pass) from using another run's build.
	wd, _ := os.Getwd()
	key := []string{name, wd}
	key = append(key, env...)
	for _, v := range []string{"GOEXPERIMENT", "GOFLAGS", "CGO_ENABLED", "GOOS", "GOARCH", "GOTOOLCHAIN"} {
		key = append(key, v+"="+os.Getenv(v))
	}
	sum := sha256.Sum256([]byte(strings.Join(key, "\x00")))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("sealproxy-testbin-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name+"-"+hex.EncodeToString(sum[:6])+exeSuffix())
	tmp, err := os.CreateTemp(dir, name+"-*.tmp"+exeSuffix())
	if err != nil {
		return "", err
	}
	tmp.Close()
	if err := goBuild(context.Background(), goTool, name, tmp.Name(), env); err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return bin, nil
}

// Build compiles ./cmd/NAME into dir and returns the binary's path, for
// the tools (the demo, the soak), which have no *testing.T. env is added
// to the go command's environment: "GOEXPERIMENT=runtimesecret" builds
// as `make build` does, and only then are the standard library's copies
// of a key erased after each signature.
func Build(ctx context.Context, name, dir string, env ...string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		// Not on PATH: `go run` may have been called by its full path.
		goTool = filepath.Join(cmp.Or(os.Getenv("GOROOT"), "/usr/local/go"), "bin", "go")
	}
	bin := filepath.Join(dir, name+exeSuffix())
	return bin, goBuild(ctx, goTool, name, bin, env)
}

func goBuild(ctx context.Context, goTool, name, out string, env []string) error {
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, "github.com/sealproxy/sealproxy/cmd/"+name)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/%s (%s): %w\n%s", name, strings.Join(env, " "), err, b)
	}
	return nil
}

func exeSuffix() string {
	if runtime.GOOS == "windows" {
		return ".exe"
	}
	return ""
}
