// Command release builds the release artifacts into dist/ (`make
// package`): a .deb for linux/amd64 and linux/arm64 made with nfpm from
// docs/packaging/nfpm.yaml, and a zip of the Windows binaries; then it
// checks what it made (the packaged binaries' build settings, the .deb's
// files and conffiles, the zip's files).
//
// Every binary is built as `make build` builds it, with
// GOEXPERIMENT=runtimesecret (without it sealproxy refuses sealed keys),
// plus -trimpath and the version stamped into `sealproxy version`.
// CGO_ENABLED=0: one recipe for every architecture, no libc dependency
// and no cross C toolchain; PKCS#11 needs a cgo build from source.
package main

import (
	"archive/zip"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// commands are the binaries of every artifact.
var commands = []string{"sealproxy", "seal", "sealgate"}

// target is one GOOS/GOARCH the release builds.
type target struct{ goos, goarch string }

var (
	debTargets = []target{{"linux", "amd64"}, {"linux", "arm64"}}
	zipTarget  = target{"windows", "amd64"}
)

func (t target) String() string { return t.goos + "-" + t.goarch }

// exe is the file name of a command on t.
func (t target) exe(cmd string) string {
	if t.goos == "windows" {
		return cmd + ".exe"
	}
	return cmd
}

func main() {
	out := flag.String("out", "dist", "output `DIR`")
	version := flag.String("version", "", "package `VERSION` (default: from git)")
	nfpm := flag.String("nfpm", "nfpm", "the nfpm `BINARY`")
	checkOnly := flag.Bool("check", false, "only check the artifacts already in -out")
	flag.Parse()
	if err := run(context.Background(), *out, *version, *nfpm, *checkOnly); err != nil {
		fmt.Fprintln(os.Stderr, "release: error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out, version, nfpm string, checkOnly bool) error {
	if version == "" {
		v, err := gitVersion(ctx)
		if err != nil {
			return err
		}
		version = v
	}
	if err := checkVersion(version); err != nil {
		return err
	}
	start := time.Now()
	if !checkOnly {
		if err := build(ctx, out, version, nfpm); err != nil {
			return err
		}
		fmt.Printf("built %s in %s\n", version, time.Since(start).Round(100*time.Millisecond))
	}
	return check(ctx, out, version)
}

// debVersionRE is what dpkg accepts as an upstream version without an
// epoch or revision.
var debVersionRE = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)

func checkVersion(v string) error {
	if !debVersionRE.MatchString(v) {
		return fmt.Errorf("version %q: want a Debian upstream version (a digit, then letters, digits, '.', '+', '~')", v)
	}
	return nil
}

// gitVersion is the tag of HEAD without its "v" (v1.2.3 → 1.2.3), or
// 0.0.0~gitYYYYMMDDhhmmss.HASH for an untagged commit: sorted by dpkg
// before any release.
func gitVersion(ctx context.Context) (string, error) {
	if tag, err := output(ctx, "git", "describe", "--tags", "--exact-match", "--match", "v[0-9]*"); err == nil {
		return strings.TrimPrefix(tag, "v"), nil
	}
	s, err := output(ctx, "git", "log", "-1", "--date=format-local:%Y%m%d%H%M%S", "--format=%cd.%h")
	if err != nil {
		return "", fmt.Errorf("no version given and git has none: %w (pass VERSION=)", err)
	}
	return "0.0.0~git" + s, nil
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(b)), nil
}

func build(ctx context.Context, out, version, nfpm string) error {
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	for _, t := range append(debTargets, zipTarget) {
		if err := goBuild(ctx, filepath.Join(out, "build", t.String()), t, version); err != nil {
			return err
		}
	}
	tmpl, err := os.ReadFile(nfpmConfig)
	if err != nil {
		return err
	}
	for _, t := range debTargets {
		// nfpm expands the environment in some fields but not in
		// contents' src: expand the whole file here.
		vars := map[string]string{"ARCH": t.goarch, "VERSION": version, "BUILD": filepath.Join(out, "build", t.String())}
		cfg := filepath.Join(out, "build", "nfpm-"+t.goarch+".yaml")
		if err := os.WriteFile(cfg, []byte(os.Expand(string(tmpl), func(k string) string { return vars[k] })), 0o644); err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, nfpm, "package", "--packager", "deb", "--config", cfg, "--target", debPath(out, version, t))
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nfpm for %s: %w\n%s", t, err, b)
		}
	}
	return writeZip(zipPath(out, version), filepath.Join(out, "build", zipTarget.String()))
}

// nfpmConfig is the package's description, with ${ARCH}, ${VERSION} and
// ${BUILD} (the directory of the binaries) to expand.
const nfpmConfig = "docs/packaging/nfpm.yaml"

func debPath(out, version string, t target) string {
	return filepath.Join(out, fmt.Sprintf("sealproxy_%s_%s.deb", version, t.goarch))
}

func zipPath(out, version string) string {
	return filepath.Join(out, fmt.Sprintf("sealproxy_%s_%s.zip", version, zipTarget))
}

// ldflags stamps the version `sealproxy version` prints.
func ldflags(version string) string { return "-X main.buildVersion=" + version }

func goBuild(ctx context.Context, dir string, t target, version string) error {
	args := []string{"build", "-trimpath", "-ldflags", ldflags(version), "-o", dir + string(filepath.Separator)}
	for _, c := range commands {
		args = append(args, "github.com/sealproxy/sealproxy/cmd/"+c)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "GOOS="+t.goos, "GOARCH="+t.goarch, "CGO_ENABLED=0", "GOEXPERIMENT=runtimesecret")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build for %s: %w\n%s", t, err, b)
	}
	return nil
}

// zipDocs go into the Windows zip beside the binaries.
var zipDocs = []string{"README.md", "docs/windows.md"}

func writeZip(path, bin string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	add := func(name, src string) error {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate})
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	for _, c := range commands {
		if err := add("sealproxy/"+zipTarget.exe(c), filepath.Join(bin, zipTarget.exe(c))); err != nil {
			return err
		}
	}
	for _, d := range zipDocs {
		if err := add("sealproxy/"+filepath.Base(d), d); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// copyFile is used by the check to take a binary out of the zip.
func copyFile(dst string, r io.Reader) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
