"""A release as `mops jobs` sees it: what its chart rendered for submitting studies (jobs.enabled).

The chart writes one ConfigMap per release, labelled app.kubernetes.io/instance=<release> and
app.kubernetes.io/component=jobs, whose `runner.json` holds the scheduler's address, the results
store's URL, the results server's Service, every worker group's executor, the runner Job template, and
(tls.enabled) where the runner pod finds the release's CA, certificate and key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from modelops.jobs.kube import JobsError, Kube, KubeError
from modelops.routing import ExecutorNotChosen, Requirement, group_serves, one_executor

RUNNER_CONFIG = "runner.json"
RUNNER_CONFIG_VERSION = 1


@dataclass(frozen=True)
class ReleaseJobs:
    release: str
    namespace: str
    scheduler: str
    store: str
    results_service: dict  # {"name", "port"}
    groups: dict  # name -> {"executor", "coldStart", "replicas", "nworkers", "nthreads"}
    job_template: dict
    tls: dict | None = None  # {"caFile", "certFile", "keyFile"} in the runner pod (the chart's tls.enabled)

    @classmethod
    def find(cls, kube: Kube, release: str) -> ReleaseJobs:
        selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=jobs"
        try:
            found = kube.items(kube.ns_path("configmaps"), selector,
                               what=f"looking for release {release!r} in namespace {kube.namespace}")
        except KubeError as exc:
            if exc.status == 403:
                raise JobsError(f"{kube.whoami()} may not read ConfigMaps in namespace {kube.namespace}, so release "
                                f"{release!r} cannot be looked up: ask for the release's submitter role "
                                "(the chart's jobs.submitters)") from None
            raise
        found = [c for c in found if RUNNER_CONFIG in (c.get("data") or {})]
        if not found:
            raise JobsError(f"no release {release!r} with jobs enabled in namespace {kube.namespace} (no ConfigMap "
                            f"labelled {selector} holding {RUNNER_CONFIG}): check the name and the namespace (-n), "
                            "and install or upgrade the chart with jobs.enabled=true")
        try:
            data = json.loads(found[0]["data"][RUNNER_CONFIG])
            if data.get("version") != RUNNER_CONFIG_VERSION:
                raise JobsError(f"release {release!r}: {RUNNER_CONFIG} version {data.get('version')!r}; this mops "
                                f"reads version {RUNNER_CONFIG_VERSION}: use the mops version of the release's image")
            return cls(release=data["release"], namespace=data["namespace"], scheduler=data["scheduler"],
                       store=data["store"], results_service=data["resultsService"], groups=data["groups"],
                       job_template=data["job"], tls=data.get("tls") or None)
        except (KeyError, TypeError, ValueError) as exc:
            raise JobsError(f"release {release!r}: its {RUNNER_CONFIG} cannot be read ({type(exc).__name__}: {exc})") \
                from None

    def describe_groups(self) -> str:
        return ", ".join(f"{name} ({g['executor']})" for name, g in sorted(self.groups.items())) or "none"

    def check_requirement(self, requirement: Requirement) -> None:
        """Fails at submit, naming the groups, when no worker group of the release can serve the study."""
        groups = self.groups
        if requirement.group is not None and requirement.group not in groups:
            raise JobsError(f"release {self.release!r} has no worker group {requirement.group!r}; its groups "
                            f"(executor): {self.describe_groups()}")
        if requirement.executor is not None:
            wanted = requirement.executor.value
            serving = [n for n, g in groups.items() if g.get("executor") == wanted
                       and (requirement.group is None or n == requirement.group)]
            if not serving:
                where = f"group {requirement.group!r}" if requirement.group else "no worker group"
                raise JobsError(f"release {self.release!r}: {where} runs executor {wanted!r}; its groups (executor): "
                                f"{self.describe_groups()}")

    def check_one_executor(self, requirement: Requirement) -> None:
        """Fails at submit when groups of several executors could serve a study that names no executor: its
        runner would refuse it (a study keeps to one executor unless --any-executor)."""
        if requirement.executor is not None:
            return
        executors: dict[str, list[str]] = {}
        for name, group in sorted(self.groups.items()):
            if group_serves(name, group.get("executor"), None, requirement.group):
                executors.setdefault(group.get("executor"), []).append(name)
        if executors:
            try:
                one_executor(requirement, dict(sorted(executors.items())), flag="--executor", where=f"release {self.release!r}: worker groups")
            except ExecutorNotChosen as exc:
                raise JobsError(str(exc)) from None

    def proxy_fetch(self, kube: Kube):
        """GET a path of the release's results server, through the API server's service proxy."""
        from modelops.results.blobs import BlobNotFound

        # the port is named `http`: the API server proxies a bare name only to an unnamed port, and authorizes
        # the name exactly as written (the chart's submitter Role grants this form)
        service = f"http:{self.results_service['name']}:{self.results_service['port']}"
        base = kube.ns_path("services", service) + "/proxy/"

        def fetch(path: str) -> bytes:
            try:
                return kube.bytes(base + path, what=f"results server {self.results_service['name']}")
            except KubeError as exc:
                if exc.status == 404 and "no object" in exc.api_message:
                    raise BlobNotFound(exc.api_message.strip()) from None
                if exc.status == 403:
                    raise JobsError(f"{kube.whoami()} may not use the release's results server "
                                    f"({self.results_service['name']}, services/proxy) in namespace {kube.namespace}: "
                                    "ask for the release's submitter role (the chart's jobs.submitters)") from None
                raise OSError(str(exc)) from None  # a server restarting: retried

        return fetch

    def results_store(self, kube: Kube, via: str = "auto", deadline: float = 20.0):
        """(the release's store for reading, a line saying how it is reached)."""
        from modelops.results.blobs import HttpBlobs, Retry
        from modelops.results.store import ResultsStore

        direct = self.store.startswith("s3://") and (via == "direct" or (
            via == "auto" and os.environ.get("AWS_ACCESS_KEY_ID")))
        if via == "direct" and not self.store.startswith("s3://"):
            raise JobsError(f"release {self.release!r} keeps results on a volume in the cluster ({self.store}): "
                            "it can only be read through the cluster (--via cluster)")
        if direct:
            store = ResultsStore.open(self.store, Retry(deadline=deadline))
            return store, f"reading {store.description} directly (this machine's AWS credentials)"
        name = self.results_service["name"]
        blobs = HttpBlobs(self.proxy_fetch(kube), f"{self.store} (through {name} in {kube.namespace})",
                          Retry(deadline=deadline))
        return ResultsStore(blobs, self.store), (f"reading {self.store} through the release's results server "
                                                 f"{name} (Kubernetes API, namespace {kube.namespace})")
