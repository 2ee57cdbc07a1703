// Package kubernetes holds sealproxy's Kubernetes manifests (kustomize:
// base/, overlays/, keygen/); its tests render them with kustomize,
// validate them with kubeconform against the Kubernetes API's own schema,
// and run `sealproxy check` on the configuration the ConfigMap carries.
// See docs/fleet.md.
package kubernetes
