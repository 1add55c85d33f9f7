"""Kubernetes: pod requests and Job manifests (pure), the pod launcher and cluster access (the `kubernetes` client)."""
