"""Client side of `mops bundle push --with-wheels`: the wheels of a bundle's lock, for the workers' platform.

Pods usually cannot reach a package index, so a bundle may carry its lock's wheels in `wheels/`; a worker
then builds the bundle's environment offline from them (bundles/environments.py). The wheels are for the
worker image's interpreter and platform (CPython 3.11, manylinux x86_64 by default), whatever machine
pushes, and come from the index this machine's pip configuration names (pip.conf, PIP_INDEX_URL,
PIP_FIND_LINKS): nothing here names one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from modelops.bundles.bundle import BundleError
from modelops.bundles.environments import LOCK_FILE, WHEELS_DIR, canonical_lock, parse_lock

# The worker image's interpreter (images/worker/Dockerfile BASE_IMAGE) and glibc (bookworm: 2.36).
IMAGE_PYTHON = "3.11"
IMAGE_GLIBC_MINOR = 36
PLATFORMS = ("x86_64", "aarch64")


def platform_tags(machine: str) -> list[str]:
    """Every manylinux tag a wheel for the image may carry (pip does not expand them itself)."""
    tags = ["any", f"manylinux2014_{machine}"]
    if machine == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    tags += [f"manylinux_2_{minor}_{machine}" for minor in range(5 if machine == "x86_64" else 17, IMAGE_GLIBC_MINOR + 1)]
    return tags


def download(lock: Path, dest: Path, python: str = IMAGE_PYTHON, machine: str = "x86_64",
             shown_as: Path | None = None) -> list[Path]:
    """Download the binary wheels of the pins of `lock` into `dest`: exactly those, as workers install
    exactly the lock (--no-deps: a complete lock pins every dependency the worker image lacks). pip is
    handed the parsed pins (canonical_lock), never the file itself: what the parser refuses never
    reaches pip."""
    shown_as = shown_as or lock  # errors name the user's file, not a temporary copy of it
    pins = parse_lock(lock.read_text(), f"{shown_as}")  # pins only: refuse before downloading anything
    if machine not in PLATFORMS:
        raise BundleError(f"--wheels-platform {machine!r} is not supported: allowed {', '.join(PLATFORMS)}")
    abi = "cp" + python.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps", "--dest", str(dest),
           "--python-version", python, "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none",
           *[arg for tag in platform_tags(machine) for arg in ("--platform", tag)]]
    with tempfile.TemporaryDirectory(prefix="modelops-lock-") as tmp:
        parsed = Path(tmp) / LOCK_FILE
        parsed.write_text(canonical_lock(pins))
        done = subprocess.run([*cmd, "-r", str(parsed)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-2000:]
        raise BundleError(f"--with-wheels: pip could not download the wheels of {shown_as} for CPython {python} "
                          f"on linux {machine} (exit {done.returncode}): {output}")
    return sorted(dest.glob("*.whl"))


@contextmanager
def with_wheels(directory: Path, python: str = IMAGE_PYTHON, machine: str = "x86_64"):
    """A temporary copy of the bundle in `directory` whose wheels/ holds its lock's wheels."""
    directory = Path(directory)
    lock = directory / LOCK_FILE
    if not lock.is_file():
        raise BundleError(f"--with-wheels: bundle {directory} has no {LOCK_FILE} (the pinned packages it needs "
                          f"beyond the worker image's); without one it runs on the image's packages")
    parse_lock(lock.read_text(), f"{lock}")  # refused naming the user's file, before anything is copied
    with tempfile.TemporaryDirectory(prefix="modelops-push-") as tmp:
        copy = Path(tmp) / directory.name
        shutil.copytree(directory, copy, symlinks=True,  # links stay links: build refuses them
                        ignore=shutil.ignore_patterns(WHEELS_DIR, "__pycache__", "*.pyc"))
        download(copy / LOCK_FILE, copy / WHEELS_DIR, python, machine, shown_as=lock)
        yield copy
