package main

import (
	"archive/zip"
	"bytes"
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// debFiles must be in every .deb (dpkg-deb -c).
var debFiles = []string{
	"./usr/bin/sealproxy", "./usr/bin/seal", "./usr/bin/sealgate",
	"./usr/lib/systemd/system/sealproxy.service",
	"./usr/lib/systemd/system/sealproxy-web.socket",
	"./usr/lib/systemd/system/sealgate.service",
	"./etc/sealproxy/sealproxy.toml",
	"./usr/share/doc/sealproxy/README.md",
	"./usr/share/doc/sealproxy/systemd.md",
	"./usr/share/doc/sealproxy/configuration.md",
}

// conffile is the one file dpkg must keep across upgrades.
const conffile = "/etc/sealproxy/sealproxy.toml"

// check verifies the artifacts in out: each .deb's control fields,
// conffiles and files, and the build settings of every packaged binary
// (what `go version -m` prints, read with the same debug/buildinfo).
func check(ctx context.Context, out, version string) error {
	tmp, err := os.MkdirTemp("", "release-check")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var errs []error
	for _, t := range debTargets {
		if err := checkDeb(ctx, debPath(out, version, t), filepath.Join(tmp, t.String()), t, version); err != nil {
			errs = append(errs, err)
		}
	}
	if err := checkZip(zipPath(out, version), filepath.Join(tmp, zipTarget.String()), version); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("checked %s: %d .deb and the Windows zip\n", out, len(debTargets))
	return nil
}

func checkDeb(ctx context.Context, deb, dir string, t target, version string) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", deb, fmt.Sprintf(format, args...))
	}
	list, err := output(ctx, "dpkg-deb", "-c", deb)
	if err != nil {
		return err
	}
	var paths []string
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) >= 6 {
			paths = append(paths, f[5])
		}
	}
	for _, want := range debFiles {
		if !slices.Contains(paths, want) {
			return fail("lacks %s (dpkg-deb -c)", want)
		}
	}
	info, err := output(ctx, "dpkg-deb", "-f", deb, "Package", "Version", "Architecture")
	if err != nil {
		return err
	}
	if want := fmt.Sprintf("Package: sealproxy\nVersion: %s\nArchitecture: %s", version, t.goarch); info != want {
		return fail("control fields %q, want %q", info, want)
	}
	conf, err := output(ctx, "dpkg-deb", "-I", deb, "conffiles")
	if err != nil {
		return err
	}
	if conf != conffile {
		return fail("conffiles %q, want %q", conf, conffile)
	}
	if _, err := output(ctx, "dpkg-deb", "-x", deb, dir); err != nil {
		return err
	}
	for _, c := range commands {
		if err := checkBinary(filepath.Join(dir, "usr/bin", c), t, version); err != nil {
			return fail("%v", err)
		}
	}
	// The stamped version, from the binary itself where it runs here.
	if t.goos == runtime.GOOS && t.goarch == runtime.GOARCH {
		v, err := output(ctx, filepath.Join(dir, "usr/bin/sealproxy"), "version")
		if err != nil {
			return fail("%v", err)
		}
		if !strings.HasPrefix(v, "sealproxy "+version+" ") {
			return fail("sealproxy version says %q, want %s", v, version)
		}
	}
	return nil
}

func checkZip(path, dir, version string) error {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return err
	}
	defer zr.Close()
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	want := []string{"sealproxy/README.md", "sealproxy/windows.md"}
	for _, c := range commands {
		want = append(want, "sealproxy/"+zipTarget.exe(c))
	}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		return fmt.Errorf("%s holds %v, want %v", path, names, want)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, c := range commands {
		r, err := zr.Open("sealproxy/" + zipTarget.exe(c))
		if err != nil {
			return err
		}
		exe := filepath.Join(dir, zipTarget.exe(c))
		err = copyFile(exe, r)
		r.Close()
		if err != nil {
			return err
		}
		if err := checkBinary(exe, zipTarget, version); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}

// checkBinary reads a binary's build settings (`go version -m`) and
// requires the release's: runtime/secret, -trimpath, no cgo, the
// target's GOOS/GOARCH, and in sealproxy the version stamp.
func checkBinary(path string, t target, version string) error {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	want := map[string]string{"GOOS": t.goos, "GOARCH": t.goarch, "CGO_ENABLED": "0", "-trimpath": "true"}
	for k, v := range want {
		if settings[k] != v {
			return fmt.Errorf("%s was built with %s=%q, want %q", filepath.Base(path), k, settings[k], v)
		}
	}
	if !slices.Contains(strings.Split(settings["GOEXPERIMENT"], ","), "runtimesecret") {
		return fmt.Errorf("%s was built without GOEXPERIMENT=runtimesecret (GOEXPERIMENT=%q)", filepath.Base(path), settings["GOEXPERIMENT"])
	}
	// With -trimpath the build information leaves -ldflags out (it can
	// hold paths), so look for the stamped string itself.
	if bi.Path == "github.com/sealproxy/sealproxy/cmd/sealproxy" {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.Contains(data, []byte(version)) {
			return fmt.Errorf("%s does not hold its version %q (-ldflags %q)", filepath.Base(path), version, ldflags(version))
		}
	}
	return nil
}
