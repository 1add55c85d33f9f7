"""The fake cluster's parts; tests use them through tests/kubernetes/fake_cluster.py."""
