"""The bundles a bench runs: the built-in bench model written as a file bundle, or a copy of a
user's bundle (with or without its warm-up), and the study whose tasks it cycles through."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from modelops.bundles.bundle import MANIFEST

DEFAULT_HEAVY = ("numpy", "scipy.stats", "pandas")
MODES = {"trivial": "bench_model:trivial", "realistic": "bench_model:sir"}
BUNDLE_NAME = "bench"


def write_bundle(bundles_dir: Path, heavy_modules: list[str]) -> Path:
    """A file bundle `bench` whose module imports `heavy_modules` at import time."""
    directory = bundles_dir / BUNDLE_NAME
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("bench_model.py"), directory / "bench_model.py")
    (directory / "heavy_modules.json").write_text(json.dumps(list(heavy_modules)))
    (directory / "bundle.json").write_text(
        json.dumps({"name": BUNDLE_NAME, "version": "1", "entrypoint": MODES["trivial"]})
    )
    return directory


# `mops bench --environment-compare`: the bench bundle again, with a requirements.txt, so the child
# executors run it in a bundle environment (bundles/environments.py). The lock is empty: the packages
# are the worker's (through the environment's .pth), so the columns differ only by what an environment
# changes, its interpreter and import path, which is what the per-task overhead target is about.
ENV_BUNDLE_NAME = "bench-env"
ENV_SUFFIX = "+env"


def write_environment_bundle(bundles_dir: Path) -> Path:
    directory = bundles_dir / ENV_BUNDLE_NAME
    shutil.copytree(bundles_dir / BUNDLE_NAME, directory)
    manifest = json.loads((directory / MANIFEST).read_text())
    (directory / MANIFEST).write_text(json.dumps({**manifest, "name": ENV_BUNDLE_NAME}))
    (directory / "requirements.txt").write_text("# no pins: the worker's packages, in an environment of its own\n")
    (directory / "wheels").mkdir()  # offline
    return directory


def copy_bundle(source: Path, bundles_dir: Path, name: str, manifest: dict, warmup) -> None:
    """`source` as bundle `name` under `bundles_dir`, its bundle.json declaring `warmup`."""
    target = bundles_dir / name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git"))
    data = {k: v for k, v in manifest.items() if k != "warmup"}
    if warmup:
        data["warmup"] = warmup
    (target / MANIFEST).write_text(json.dumps({**data, "name": name}))


def load_bench_study(bundle_dir: Path, study_path: Path | None, manifest: dict):
    """The study whose tasks the bench cycles through: --study, else DIR/study.json, else one
    task with empty params (seeds still vary per task)."""
    from modelops.study import Study

    if study_path is None and (bundle_dir / "study.json").is_file():
        study_path = bundle_dir / "study.json"
    if study_path is not None:
        return Study.load(study_path), str(study_path)
    return Study(name="bench", bundle=manifest["name"], parameters=[{}], replicates=1000), None
