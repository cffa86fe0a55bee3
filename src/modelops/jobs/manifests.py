"""The objects one submitted study becomes: its Job (from the release's template) and its study ConfigMap.

Pure functions of the template and the job's name, tested without a cluster.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import string

JOB_LABEL = "modelops-dask.io/job"
STUDY_LABEL = "modelops-dask.io/study"
STUDY_NAME_ANNOTATION = "modelops-dask.io/study-name"
STUDY_DIR = "/etc/modelops/study"
STUDY_KEY = "study.json"
STUDY_VOLUME = "study"
RUNNER_CONTAINER = "runner"
# A ConfigMap holds at most 1 MiB; leave room for its metadata.
STUDY_MAX_BYTES = 1000 * 1024
NAME_MAX = 52  # Job names <= 63; the pods the Job makes add "-xxxxx"


def job_name(study_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", study_name.lower()).strip("-")[:NAME_MAX - 6].strip("-") or "study"
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    return f"{slug}-{suffix}"


def label_value(text: str) -> str:
    """`text` as a label value (63 characters of [A-Za-z0-9._-], alphanumeric at both ends)."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def study_configmap_name(job: str) -> str:
    return f"{job}-study"


def runner_args(study_file: str, scheduler: str, store: str, job: str, recompute: bool = False,
                max_in_flight: int | None = None, tls: dict | None = None, any_executor: bool = False,
                wait_workers: float | None = None) -> list[str]:
    """`tls`: the release's runner.json "tls" ({"caFile", "certFile", "keyFile"}: where the Job template
    mounts the release's certificate), or None for a release without TLS."""
    args = ["mops", "run", study_file, "--scheduler", scheduler, "--store", store, "--job", job,
            "--progress", "lines"]
    if tls:
        args += ["--tls-ca-file", tls["caFile"], "--tls-cert", tls["certFile"], "--tls-key", tls["keyFile"]]
    if recompute:
        args.append("--recompute")
    if max_in_flight:
        args += ["--max-in-flight", str(max_in_flight)]
    if any_executor:
        args.append("--any-executor")
    if wait_workers is not None:
        args += ["--wait-workers", f"{wait_workers:g}"]
    return args


def runner_job(template: dict, name: str, study_name: str, args: list[str]) -> dict:
    """The release's Job template made into this job's Job: named, labelled, its study mounted, its runner's
    arguments set; created suspended, so its study ConfigMap (owned by the Job) exists before a pod starts."""
    job = copy.deepcopy(template)
    job.setdefault("apiVersion", "batch/v1")
    job.setdefault("kind", "Job")
    meta = job.setdefault("metadata", {})
    meta["name"] = name
    meta.pop("namespace", None)
    labels = {JOB_LABEL: name, STUDY_LABEL: label_value(study_name) or "study"}
    meta.setdefault("labels", {}).update(labels)
    meta.setdefault("annotations", {})[STUDY_NAME_ANNOTATION] = study_name
    spec = job.setdefault("spec", {})
    spec["suspend"] = True
    pod = spec.setdefault("template", {})
    pod.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    pod_spec = pod.setdefault("spec", {})
    containers = pod_spec.get("containers") or []
    runner = next((c for c in containers if c.get("name") == RUNNER_CONTAINER), None)
    if runner is None:
        raise ValueError(f"the release's Job template has no container named {RUNNER_CONTAINER!r}")
    runner["args"] = list(args)
    runner.setdefault("volumeMounts", []).append({"name": STUDY_VOLUME, "mountPath": STUDY_DIR, "readOnly": True})
    pod_spec.setdefault("volumes", []).append(
        {"name": STUDY_VOLUME, "configMap": {"name": study_configmap_name(name)}})
    return job


def study_configmap(job: dict, study_json: str) -> dict:
    """The study of `job` (as the API server returned it: its uid owns the ConfigMap)."""
    meta = job["metadata"]
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": study_configmap_name(meta["name"]),
            "labels": {k: v for k, v in meta.get("labels", {}).items()},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                                 "controller": False, "blockOwnerDeletion": False}],
        },
        "data": {STUDY_KEY: study_json},
    }


def study_json(study) -> str:
    return json.dumps(study.model_dump(mode="json", exclude_none=True), indent=1, sort_keys=True)
