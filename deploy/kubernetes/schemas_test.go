package kubernetes

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// writeSchemas turns the Kubernetes OpenAPI v2 document spec into the
// JSON Schema files kubeconform reads, one per kind, named as its
// default layout names them (deployment-apps-v1.json, service-v1.json):
// every $ref inlined, objects closed to unknown fields (kubeconform's
// -strict expects the schema to say so), null allowed where the API
// server allows it, and the two types whose JSON is not what the
// document's "type" says (IntOrString, Quantity) widened. kubeconform's
// own schemas are made the same way by a Python script
// (openapi2jsonschema); this is that conversion, for the kinds used here.
func writeSchemas(spec []byte, dir string) error {
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(spec, &doc); err != nil {
		return fmt.Errorf("reading the OpenAPI document: %w", err)
	}
	for name, def := range doc.Definitions {
		gvks, _ := def["x-kubernetes-group-version-kind"].([]any)
		if len(gvks) != 1 {
			continue // a type, not a kind; or a kind of several versions (meta types)
		}
		gvk := gvks[0].(map[string]any)
		group, version, kind := gvk["group"].(string), gvk["version"].(string), gvk["kind"].(string)
		if !wantKinds[kind] {
			continue
		}
		s, err := inline(doc.Definitions, name, map[string]bool{})
		if err != nil {
			return err
		}
		props := s["properties"].(map[string]any)
		apiVersion := version
		if group != "" {
			apiVersion = group + "/" + version
		}
		props["apiVersion"] = map[string]any{"type": "string", "enum": []any{apiVersion}}
		props["kind"] = map[string]any{"type": "string", "enum": []any{kind}}
		s["required"] = appendMissing(s["required"], "apiVersion", "kind")
		file := strings.ToLower(kind)
		if group != "" {
			file += "-" + strings.ToLower(strings.Split(group, ".")[0])
		}
		file += "-" + version + ".json"
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, file), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// wantKinds are the kinds the manifests use (and a few they may).
var wantKinds = map[string]bool{
	"Deployment": true, "Service": true, "ConfigMap": true, "Secret": true,
	"PersistentVolumeClaim": true, "PodDisruptionBudget": true, "NetworkPolicy": true,
	"Namespace": true, "Job": true, "ServiceAccount": true,
}

// inline returns definition name with its references replaced by what
// they name. A type that contains itself (none of wantKinds' do) fails.
func inline(defs map[string]map[string]any, name string, open map[string]bool) (map[string]any, error) {
	switch name {
	case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}, nil
	case "io.k8s.apimachinery.pkg.api.resource.Quantity":
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}, nil
	}
	if open[name] {
		return nil, fmt.Errorf("schema %s contains itself", name)
	}
	def, ok := defs[name]
	if !ok {
		return nil, fmt.Errorf("schema %s is not in the document", name)
	}
	open[name] = true
	defer delete(open, name)
	v, err := convert(defs, def, open)
	if err != nil {
		return nil, err
	}
	return v.(map[string]any), nil
}

func convert(defs map[string]map[string]any, v any, open map[string]bool) (any, error) {
	switch v := v.(type) {
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			c, err := convert(defs, e, open)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]any:
		if ref, ok := v["$ref"].(string); ok {
			return inline(defs, strings.TrimPrefix(ref, "#/definitions/"), open)
		}
		out := map[string]any{}
		for k, e := range v {
			switch {
			case strings.HasPrefix(k, "x-kubernetes-"), k == "description", k == "format":
				continue // annotations, and formats kubeconform does not know
			case k == "properties":
				props := map[string]any{}
				for p, ps := range e.(map[string]any) {
					c, err := convert(defs, ps, open)
					if err != nil {
						return nil, err
					}
					props[p] = c
				}
				out[k] = props
				continue
			}
			c, err := convert(defs, e, open)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		if _, ok := out["properties"]; ok {
			if _, set := out["additionalProperties"]; !set {
				out["additionalProperties"] = false
			}
		}
		if t, ok := out["type"].(string); ok {
			out["type"] = []any{t, "null"}
		}
		return out, nil
	}
	return v, nil
}

func appendMissing(list any, names ...string) []any {
	out, _ := list.([]any)
	for _, n := range names {
		found := false
		for _, e := range out {
			found = found || e == n
		}
		if !found {
			out = append(out, n)
		}
	}
	return out
}
