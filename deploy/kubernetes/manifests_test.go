package kubernetes

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

// The tools and the schema's source, pinned. All three come from the Go
// module proxy; nothing else is downloaded. kustomize v5.8.3 needs a
// kube-openapi version the proxy refuses, hence v5.8.2.
const (
	kustomizePkg   = "sigs.k8s.io/kustomize/kustomize/v5@v5.8.2"
	kubeconformPkg = "github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0"
	// k8s.io/kubernetes ships the API's OpenAPI document
	// (api/openapi-spec/swagger.json, Apache-2.0); the schemas
	// kubeconform reads are made from it (schemas_test.go).
	kubernetesMod = "k8s.io/kubernetes@v1.37.2"
)

// kustomizations are the directories `kustomize build` must render.
var kustomizations = []string{"base", "overlays/example", "overlays/ipc-lock", "keygen"}

// tool installs pkg (pinned) once per machine into the system temporary
// directory and returns the binary. A failed build skips outside CI (it
// needs the module proxy) and fails under SEALPROXY_REQUIRE_INTEROP=1.
func tool(t *testing.T, pkg string) string {
	t.Helper()
	testenv.SkipIfShort(t, "builds "+pkg)
	goTool := testenv.LookTool(t, "go", "golang-go")
	name := filepath.Base(strings.Split(pkg, "@")[0])
	if name == "v5" {
		name = "kustomize"
	}
	version := strings.Split(pkg, "@")[1]
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("sealproxy-tools-%d", os.Getuid()), name+"-"+version)
	bin := filepath.Join(dir, name)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "install", pkg)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOOS=", "GOARCH=", "GOFLAGS=", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := fmt.Sprintf("go install %s: %v\n%s", pkg, err, out)
		if testenv.RequireInterop() {
			t.Fatal(msg)
		}
		t.Skipf("skipping: %s(it needs the Go module proxy; SEALPROXY_REQUIRE_INTEROP=1 makes this a failure)", msg)
	}
	return bin
}

var (
	schemaOnce sync.Once
	schemaDir  string
	schemaErr  error
)

// schemas writes kubeconform's schemas for the kinds the manifests use,
// made from the pinned Kubernetes OpenAPI document, once per test binary.
func schemas(t *testing.T) string {
	t.Helper()
	goTool := testenv.LookTool(t, "go", "golang-go")
	schemaOnce.Do(func() {
		var out []byte
		cmd := exec.Command(goTool, "mod", "download", "-json", kubernetesMod)
		cmd.Env = append(os.Environ(), "GOFLAGS=")
		cmd.Dir = os.TempDir() // outside this module: only the zip is wanted
		out, schemaErr = cmd.Output()
		if schemaErr != nil {
			schemaErr = fmt.Errorf("go mod download %s: %w", kubernetesMod, schemaErr)
			return
		}
		var mod struct{ Dir, Error string }
		if schemaErr = json.Unmarshal(out, &mod); schemaErr != nil || mod.Error != "" {
			schemaErr = fmt.Errorf("go mod download %s: %v %s", kubernetesMod, schemaErr, mod.Error)
			return
		}
		spec, err := os.ReadFile(filepath.Join(mod.Dir, "api", "openapi-spec", "swagger.json"))
		if err != nil {
			schemaErr = err
			return
		}
		schemaDir, schemaErr = os.MkdirTemp("", "sealproxy-k8s-schemas-")
		if schemaErr == nil {
			schemaErr = writeSchemas(spec, schemaDir)
		}
	})
	if schemaErr != nil {
		if testenv.RequireInterop() {
			t.Fatal(schemaErr)
		}
		t.Skipf("skipping: %v (it needs the Go module proxy; SEALPROXY_REQUIRE_INTEROP=1 makes this a failure)", schemaErr)
	}
	return schemaDir
}

func render(t *testing.T, kustomize, dir string) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(kustomize, "build", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", dir, err, stderr.Bytes())
	}
	return out
}

// kubeconform validates rendered manifests strictly (unknown fields are
// errors) and returns its report and whether they passed.
func kubeconform(t *testing.T, bin, schemaDir string, rendered []byte) (string, bool) {
	t.Helper()
	cmd := exec.Command(bin, "-strict", "-summary", "-verbose",
		"-schema-location", filepath.Join(schemaDir, "{{ .ResourceKind }}{{ .KindSuffix }}.json"), "-")
	cmd.Stdin = bytes.NewReader(rendered)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("kubeconform: %v", err)
		}
	}
	return string(out), err == nil
}

// TestManifests renders every kustomization and validates what it
// renders against the Kubernetes v1.37 API schema, with no unknown field.
func TestManifests(t *testing.T) {
	kustomize := tool(t, kustomizePkg)
	kc := tool(t, kubeconformPkg)
	dir := schemas(t)
	for _, k := range kustomizations {
		t.Run(k, func(t *testing.T) {
			rendered := render(t, kustomize, k)
			report, ok := kubeconform(t, kc, dir, rendered)
			if !ok {
				t.Fatalf("kubeconform refused %s:\n%s", k, report)
			}
			// Every resource was checked: none skipped for want of a schema.
			n := bytes.Count(rendered, []byte("\nkind: "))
			if !strings.Contains(report, fmt.Sprintf("Valid: %d,", n)) {
				t.Errorf("kubeconform did not validate all %d resources of %s:\n%s", n, k, report)
			}
			t.Logf("%s: %s", k, lastLine(report))
			hardened(t, string(rendered), k == "overlays/ipc-lock")
		})
	}
}

// hardened checks docs/fleet.md's security context on every container
// and pod of rendered manifests: non-root, read-only root, no privilege
// escalation, every capability dropped, RuntimeDefault seccomp, and
// IPC_LOCK added only by the ipc-lock overlay (to both Deployments).
func hardened(t *testing.T, rendered string, ipcLock bool) {
	t.Helper()
	containers := strings.Count(rendered, "\n        image: ")
	pods := strings.Count(rendered, "\n    spec:\n") // a template's spec
	if containers == 0 || pods == 0 {
		t.Fatalf("found %d containers in %d pod templates: the counts below would prove nothing", containers, pods)
	}
	for _, tt := range []struct {
		text string
		want int
	}{
		{"readOnlyRootFilesystem: true", containers},
		{"allowPrivilegeEscalation: false", containers},
		{"- ALL", containers},
		{"runAsNonRoot: true", pods},
		{"type: RuntimeDefault", pods},
		{"automountServiceAccountToken: false", pods},
		{"- IPC_LOCK", map[bool]int{true: 2}[ipcLock]},
		{"privileged: true", 0},
		{"hostNetwork", 0},
	} {
		if got := strings.Count(rendered, tt.text); got != tt.want {
			t.Errorf("%q appears %d times, want %d (%d containers, %d pods)", tt.text, got, tt.want, containers, pods)
		}
	}
}

// TestManifestsRefuseMistakes: the validation can fail. Each mistake is
// one an edit could make; kubeconform must name it.
func TestManifestsRefuseMistakes(t *testing.T) {
	kustomize := tool(t, kustomizePkg)
	kc := tool(t, kubeconformPkg)
	dir := schemas(t)
	good := string(render(t, kustomize, "overlays/example"))
	for _, tt := range []struct{ name, old, new, want string }{
		{"misspelt field", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true", "readOnlyRootFileSystem"},
		{"wrong type", "containerPort: 8443", "containerPort: tls-port", "containerPort"},
		{"unknown probe field", "periodSeconds: 2", "periodSecond: 2", "periodSecond"},
		{"missing required field", "containerPort: 9090", "protocol: TCP", "containerPort"},
		{"wrong apiVersion", "apiVersion: policy/v1", "apiVersion: policy/v1beta2", "PodDisruptionBudget"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(good, tt.old) {
				t.Fatalf("the rendered manifests lack %q", tt.old)
			}
			bad := strings.Replace(good, tt.old, tt.new, 1)
			report, ok := kubeconform(t, kc, dir, []byte(bad))
			if ok {
				t.Fatalf("kubeconform accepted %s:\n%s", tt.name, report)
			}
			if !strings.Contains(report, tt.want) {
				t.Errorf("report does not name %q:\n%s", tt.want, report)
			}
		})
	}
}

// TestConfigMapConfigChecks runs `sealproxy check` on the configuration
// the rendered ConfigMap carries, laid out as the pod mounts it: the
// ConfigMap at /etc/sealproxy/config and the Secret (a certificate and a
// sealed key) at /etc/sealproxy/keys.
func TestConfigMapConfigChecks(t *testing.T) {
	kustomize := tool(t, kustomizePkg)
	bin := testenv.BuildCommand(t, "sealproxy")
	rendered := render(t, kustomize, "overlays/example")
	cfg, err := configMapFile(rendered, "sealproxy.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, mount := range []string{"mountPath: /etc/sealproxy/config", "mountPath: /etc/sealproxy/keys", "secretName: sealproxy-keys"} {
		if !bytes.Contains(rendered, []byte(mount)) {
			t.Fatalf("the Deployment lacks %q, which this test lays out", mount)
		}
	}
	root := t.TempDir()
	conf, keys := filepath.Join(root, "config"), filepath.Join(root, "keys")
	for _, d := range []string{conf, keys} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testenv.NewCA(t, "test CA").Server(t, "web.test").WriteFiles(t, keys, "web")
	// check does not open keys, but the file must be there.
	if err := os.WriteFile(filepath.Join(keys, "web.key.jwe"), []byte("not opened by check"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(conf, "sealproxy.toml")
	if err := os.WriteFile(path, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check", "--config", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration is valid: 1 listener(s), 1 key(s)") {
		t.Fatalf("sealproxy check on the ConfigMap's configuration: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "warning") {
		t.Errorf("sealproxy check warns:\n%s", out)
	}
}

// configMapFile returns the value of key in the data of a rendered
// ConfigMap: kustomize writes a multi-line value as a literal block
// (`key: |`), indented under data.
func configMapFile(rendered []byte, key string) ([]byte, error) {
	lines := strings.Split(string(rendered), "\n")
	for i, l := range lines {
		trimmed := strings.TrimLeft(l, " ")
		if trimmed != key+": |" && trimmed != key+": |-" && trimmed != key+": |+" {
			continue
		}
		outer := len(l) - len(trimmed)
		var b strings.Builder
		indent := -1
		for _, v := range lines[i+1:] {
			body := strings.TrimLeft(v, " ")
			if body != "" && len(v)-len(body) <= outer {
				break
			}
			if indent < 0 && body != "" {
				indent = len(v) - len(body)
			}
			if body == "" {
				b.WriteString("\n")
				continue
			}
			b.WriteString(v[indent:] + "\n")
		}
		return []byte(b.String()), nil
	}
	return nil, fmt.Errorf("no ConfigMap key %q in the rendered manifests", key)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}
