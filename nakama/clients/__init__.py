"""The one home of each external client (git now; GitLab, Harbor and Kubernetes later)."""
