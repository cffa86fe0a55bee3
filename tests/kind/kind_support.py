"""Paths and pins shared by the kind tests."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / ".tools" / "bin" / "helm"
CHART = REPO / "charts" / "modelops-dask"
VALUES = REPO / "values"
# kind v0.30.0's node image for Kubernetes 1.34. Override with --kind-image.
DEFAULT_NODE_IMAGE = "kindest/node:v1.34.0"
CLUSTER_NAME = "modelops-dask-e2e"
