"""Helpers for the chart tests: paths, the Helm wrapper, values files and rendered-object queries."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelops-dask"
TOOLS_BIN = REPO / ".tools" / "bin"
HELM_PLUGINS = REPO / ".tools" / "helm-plugins"
VALUES_DIR = REPO / "values"
CI_DIR = CHART / "ci"

# Helm binary name in .tools/bin -> major version it must report.
HELMS = {"helm": "v4.", "helm3": "v3."}

RELEASE = "rel"
# KEDA's API: a group with autoscaling.enabled renders only where the cluster has it (the render fails
# naming it otherwise, as the helm-unittest suite autoscaling_test.yaml checks); renders here assume it.
KEDA_API = "keda.sh/v1alpha1/ScaledObject"
NAMESPACE = "sims"


@dataclass(frozen=True)
class Helm:
    name: str
    path: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HELM_PLUGINS": str(HELM_PLUGINS)}
        proc = subprocess.run(
            [str(self.path), *args], capture_output=True, text=True, env=env, timeout=120, cwd=REPO
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{self.name} {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def template(self, *args: str, release: str = RELEASE, chart: Path = CHART) -> list[dict]:
        """`helm template` -> the rendered objects (hooks and tests included), on a cluster with KEDA."""
        out = self.run("template", release, str(chart), "--namespace", NAMESPACE, "--api-versions", KEDA_API,
                       *args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


def values_files() -> list[Path]:
    """Every values file users pass to `helm install -f` plus the chart-testing scenarios."""
    files = sorted(VALUES_DIR.glob("*.yaml")) + sorted(CI_DIR.glob("*-values.yaml"))
    assert files, "no values files found"
    return files


def file_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def lint_args(values: dict) -> list[str]:
    """`helm lint` cannot be told the cluster has KEDA (no --api-versions): a values file's autoscaled
    groups are linted as fixed groups (`--set ...autoscaling.enabled=false`); their ScaledObjects are
    rendered and validated by `template` above."""
    worker = values.get("worker") or {}
    groups = {"worker": worker, **{f"worker.groups.{n}": g or {} for n, g in (worker.get("groups") or {}).items()}}
    return [a for path, g in groups.items() if (g.get("autoscaling") or {}).get("enabled")
            for a in ("--set", f"{path}.autoscaling.enabled=false")]


def workers(objects: list[dict]) -> list[dict]:
    return [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    ]


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}
