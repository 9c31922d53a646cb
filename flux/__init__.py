"""Flux manifests for apps: rendered from a project's settings, committed to the GitOps
repository, validated against the Flux CRDs and Kubernetes' schemas."""
