// Package kubernetes checks deploy/kubernetes/verbatim.yaml, the manifests
// of Verbatim's roles: every object decodes strictly into the Kubernetes
// API types, and its test states the rules they keep (probes on the
// operations port, resources, no root, secrets from Secret objects only,
// the processor a StatefulSet). Its own module, so k8s.io/api is not a
// dependency of Verbatim's.
package kubernetes
