"""`mops jobs`: studies submitted to a release of the chart, run there by a runner pod (a Kubernetes Job).

    mops jobs submit STUDY.json --release NAME [-n NS] [--group G] [--executor E | --any-executor] [--wait]
    mops jobs list | status JOB | logs JOB [-f] | cancel JOB | resume JOB | wait JOB | delete JOB

`submit` validates everything it can before creating anything (the study file, the release, the group
or executor the study requires, its bundle pinned to one digest, the results store as the release's
results server reaches it, this user's RBAC), then creates the Job and its study ConfigMap, prints the
job's name and returns: the study goes on without this machine. A failure after the Job was created
deletes what was created.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from modelops.cli.run import EXECUTORS, with_requirement

POLL_S = 2.0
PROGRESS_EVERY_S = 10.0
WAIT_LOG_LINES = 200  # how much of a running runner's log `status` reads for its latest waiting line


def kube_options(command):
    for option in reversed([
        click.option("-n", "--namespace", help="The release's namespace [default: the kubeconfig context's]."),
        click.option("--kubeconfig", type=click.Path(dir_okay=False), help="[default: $KUBECONFIG or ~/.kube/config]"),
        click.option("--context", help="kubeconfig context [default: the current one]."),
    ]):
        command = option(command)
    return command


def _connect(kubeconfig, context, namespace):
    from modelops.jobs.kube import Kube

    return Kube.connect(kubeconfig, context, namespace)


class _Errors(click.Group):
    """Every JobsError or store error of a subcommand is a clear error line and exit 1, never a traceback."""

    def invoke(self, ctx):
        from modelops.jobs.kube import JobsError
        from modelops.results.url import StoreError

        try:
            return super().invoke(ctx)
        except (JobsError, StoreError) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Errors)
def jobs() -> None:
    """Submit studies to a release and follow them (the study runs in the cluster, not here)."""


@jobs.command()
@click.argument("study_path", metavar="STUDY", type=click.Path(dir_okay=False))
@click.option("--release", required=True, help="The release of the chart to run it on (installed with jobs.enabled).")
@kube_options
@click.option("--group", help="Run only on this worker group of the release (overrides the study's requires.group).")
@click.option("--executor", type=click.Choice(EXECUTORS), help="Run only on workers running this executor "
              "(overrides the study's requires.executor; workers keep their own executor). Without it the job keeps "
              "to the executor of the workers serving it when its runner first starts.")
@click.option("--any-executor", is_flag=True, help="Do not keep the job to one executor: its tasks may run on workers "
              "of any executor (its results may then mix executors).")
@click.option("--bundles-dir", type=click.Path(file_okay=False), help="Where this machine's copy of a file bundle "
              "is, to pin its digest [default: the parent of the study's directory].")
@click.option("--no-pin", is_flag=True, help="Do not pin a file bundle here (e.g. one only the image has): the "
              "runner pins the workers' copy when it first starts, and keeps that digest for the whole job.")
@click.option("--recompute", is_flag=True, help="Run tasks even when the store already has a successful result for "
              "the same inputs from another job.")
@click.option("--name", "job", help="The job's name [default: the study's name and a random suffix].")
@click.option("--max-in-flight", type=click.IntRange(1), help="The runner's bound on tasks submitted at once.")
@click.option("--wait-workers", type=click.FloatRange(min=1), help="The runner's bound, in seconds, on waiting for "
              "workers that can serve the study: at its start, and mid-study when none of its executor is left (then "
              "it fails naming what changed) [default: mops run's, 120].")
@click.option("--wait", "wait_done", is_flag=True, help="Wait for the job to finish, printing its progress.")
@click.option("--timeout", type=click.FloatRange(min=1), help="With --wait: give up waiting after this many seconds.")
def submit(study_path, release, namespace, kubeconfig, context, group, executor, any_executor, bundles_dir, no_pin,
           recompute, job, max_in_flight, wait_workers, wait_done, timeout):
    """Submit STUDY to a release: a runner pod runs it against the release's scheduler."""
    from modelops.jobs.kube import JobsError, KubeError
    from modelops.jobs.manifests import (STUDY_DIR, STUDY_KEY, STUDY_MAX_BYTES, job_name, runner_args, runner_job,
                                         study_configmap, study_json)
    from modelops.jobs.release import ReleaseJobs
    from modelops.results.store import StoreError, check_job_name
    from modelops.study import Study, StudyError

    try:
        study = with_requirement(Study.load(study_path), group, executor)
    except (StudyError, ValueError) as exc:
        raise click.ClickException(f"nothing was submitted: {exc}") from None
    if any_executor and study.requires.executor:
        raise click.UsageError(f"--any-executor lets a job run on any executor, but the study requires executor "
                               f"{study.requires.executor.value!r} (--executor or its requires.executor): give one or "
                               "the other")
    if job:
        try:
            check_job_name(job)
        except StoreError as exc:
            raise click.BadParameter(str(exc), param_hint="--name") from None
    kube = _connect(kubeconfig, context, namespace)
    try:
        target = ReleaseJobs.find(kube, release)
        target.check_requirement(study.requires)
        if not any_executor:
            target.check_one_executor(study.requires)
        study = _pin(study, study_path, bundles_dir, no_pin)
        spec = study_json(study)
        if len(spec.encode()) > STUDY_MAX_BYTES:
            raise JobsError(f"study file {study_path} is {len(spec.encode()) // 1024} KiB as JSON, over the "
                            f"{STUDY_MAX_BYTES // 1024} KiB a study ConfigMap holds")
        _check_rbac(kube)
        _check_store(kube, target)
    except JobsError as exc:
        raise click.ClickException(f"nothing was submitted: {exc}") from None

    for attempt in range(5):
        name = job or job_name(study.name)
        args = runner_args(f"{STUDY_DIR}/{STUDY_KEY}", target.scheduler, target.store, name, recompute, max_in_flight,
                           target.tls, any_executor, wait_workers)
        try:
            created = kube.json("POST", kube.ns_path("jobs", group="batch/v1"),
                                runner_job(target.job_template, name, study.name, args), what=f"creating Job {name}")
            break
        except KubeError as exc:
            if exc.status != 409 or job:
                raise click.ClickException(f"nothing was submitted: {exc}") from None
    else:
        raise click.ClickException("nothing was submitted: five generated job names were all taken")
    try:
        kube.json("POST", kube.ns_path("configmaps"), study_configmap(created, spec),
                  what=f"creating the study ConfigMap of job {name}")
        kube.json("PATCH", kube.ns_path("jobs", name, "batch/v1"), {"spec": {"suspend": False}},
                  content_type="application/merge-patch+json", what=f"starting job {name}")
    except JobsError as exc:
        _delete_job(kube, name)
        raise click.ClickException(f"{exc}; job {name} was deleted again, nothing is left") from None
    ns = kube.namespace
    click.echo(f"Submitted job {name}: study {study.name!r}, {study.task_count()} tasks, bundle {study.bundle}"
               + (f" {study.bundle_digest[:19]}" if study.bundle_digest else "")
               + f", to release {release} in namespace {ns} (results: {target.store})")
    click.echo(f"  follow:   mops jobs status {name} -n {ns}    mops jobs logs {name} -n {ns} -f")
    click.echo(f"  results:  mops results download {name} --release {release} -n {ns} --format parquet")
    if wait_done:
        sys.exit(_wait(kube, name, timeout))


def _pin(study, study_path: str, bundles_dir: str | None, no_pin: bool):
    """The study with its bundle pinned here: an OCI tag resolved to a digest, a file bundle's digest computed
    from this machine's copy (the workers refuse the study if theirs differs)."""
    from modelops.bundles import BundleError, BundleResolver
    from modelops.bundles.resolver import is_oci_reference
    from modelops.jobs.kube import JobsError
    from modelops.services.bundle_pinning import pin_study

    try:
        if is_oci_reference(study.bundle):
            return pin_study(study)
        if no_pin:
            return study
        directory = Path(bundles_dir or Path(study_path).resolve().parent.parent)
        bundle = BundleResolver("file", directory).resolve(study.bundle)
    except BundleError as exc:
        if not is_oci_reference(study.bundle) and not (directory / study.bundle).is_dir():
            # the resolver names the workers' settings; here the copy is this machine's
            raise JobsError(
                f"bundle {study.bundle!r} not found on this machine: no {directory / study.bundle / 'bundle.json'} "
                "(a file bundle is pinned from this machine's copy: --bundles-dir names where it is; --no-pin "
                "lets the runner pin the workers' copy; an OCI reference is pinned through its registry)") from None
        raise JobsError(str(exc)) from None
    return study.model_copy(update={"bundle_digest": bundle.digest})


def _check_rbac(kube) -> None:
    from modelops.jobs.kube import JobsError

    needed = [("create", "jobs", "batch"), ("patch", "jobs", "batch"), ("delete", "jobs", "batch"),
              ("create", "configmaps", "")]
    missing = [f"{verb} {resource}{'.' + group if group else ''}" for verb, resource, group in needed
               if not kube.allowed(verb, resource, group)]
    if missing:
        raise JobsError(f"{kube.whoami()} may not {', '.join(missing)} in namespace {kube.namespace} (RBAC): ask for "
                        "the release's submitter role (the chart's jobs.submitters binds it)")


def _check_store(kube, target) -> None:
    """The release's store, as its results server (in the cluster, with the release's credentials) reaches it."""
    from modelops.jobs.kube import JobsError
    from modelops.results.blobs import HttpBlobs, Retry
    from modelops.results.url import StoreError

    blobs = HttpBlobs(target.proxy_fetch(kube), target.results_service["name"], Retry(deadline=10.0))
    try:
        status = blobs.store_status()
    except StoreError as exc:
        raise JobsError(f"the release's results server {target.results_service['name']} does not answer, so its "
                        f"results store {target.store} cannot be checked: {exc}") from None
    if not status.get("ok"):
        raise JobsError(f"the release's results store {status.get('url') or target.store} is not reachable from the "
                        f"cluster: {status.get('error')}")


def _delete_job(kube, name: str) -> None:
    from modelops.jobs.kube import KubeError

    try:
        kube.json("DELETE", kube.ns_path("jobs", name, "batch/v1"), {"propagationPolicy": "Foreground"},
                  what=f"deleting job {name}")
    except KubeError as exc:
        if exc.status != 404:
            raise


def _job(kube, name: str) -> dict:
    from modelops.jobs.kube import JobsError
    from modelops.jobs.manifests import JOB_LABEL

    job = kube.get_or_none(kube.ns_path("jobs", name, "batch/v1"), what=f"reading job {name}")
    if job is None or JOB_LABEL not in job["metadata"].get("labels", {}):
        raise JobsError(f"no mops job {name!r} in namespace {kube.namespace} (mops jobs list shows them)")
    return job


def _info(kube, job: dict):
    from modelops.jobs.status import job_info

    pods = kube.items(kube.ns_path("pods"), f"batch.kubernetes.io/job-name={job['metadata']['name']}")
    return job_info(job, pods)


def _waiting(kube, pod: str) -> str | None:
    """The runner's latest `waiting for workers of group ...` line, from its log's tail."""
    from modelops.jobs.kube import KubeError
    from modelops.jobs.status import runner_waiting

    try:
        log = kube.bytes(kube.ns_path("pods", pod) + "/log", {"tailLines": WAIT_LOG_LINES},
                         what=f"reading the log of {pod}")
    except KubeError as exc:  # e.g. no `get pods/log` for this user: the rest of the status still stands
        return f"(whether it waits for workers is unknown: {exc})"
    return runner_waiting(log.decode(errors="replace"))


def _release_of(kube, job: dict):
    from modelops.jobs.release import ReleaseJobs

    return ReleaseJobs.find(kube, job["metadata"]["labels"]["app.kubernetes.io/instance"])


def _counts(kube, job: dict, via: str = "auto"):
    from modelops.jobs.status import task_counts

    store, _ = _release_of(kube, job).results_store(kube, via)
    return task_counts(store, job["metadata"]["name"])


@jobs.command("list")
@click.option("--release", help="Only this release's jobs.")
@kube_options
def list_jobs(release, namespace, kubeconfig, context):
    """The namespace's mops jobs: name, study, state, runner pods, age."""
    from modelops.jobs.manifests import JOB_LABEL
    from modelops.jobs.status import job_info

    kube = _connect(kubeconfig, context, namespace)
    selector = JOB_LABEL + (f",app.kubernetes.io/instance={release}" if release else "")
    found = kube.items(kube.ns_path("jobs", group="batch/v1"), selector)
    pods = kube.items(kube.ns_path("pods"), JOB_LABEL)
    rows = []
    for job in sorted(found, key=lambda j: j["metadata"].get("creationTimestamp", "")):
        name = job["metadata"]["name"]
        info = job_info(job, [p for p in pods if p["metadata"]["labels"].get(JOB_LABEL) == name])
        rows.append((name, info.study, info.state, str(len(info.pods)), info.created))
    if not rows:
        click.echo(f"no mops jobs in namespace {kube.namespace}" + (f" for release {release}" if release else ""))
        return
    widths = [max(len(r[i]) for r in [("NAME", "STUDY", "STATE", "PODS", "CREATED"), *rows]) for i in range(5)]
    for row in [("NAME", "STUDY", "STATE", "PODS", "CREATED"), *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@jobs.command()
@click.argument("name", metavar="JOB")
@kube_options
@click.option("--via", type=click.Choice(["auto", "direct", "cluster"]), default="auto", show_default=True,
              help="How to read an s3:// store (see mops results).")
def status(name, namespace, kubeconfig, context, via):
    """The job's state, its runner pods, its tasks (done / failed / total, from the store) and the executor per
    worker group."""
    kube = _connect(kubeconfig, context, namespace)
    job = _job(kube, name)
    info = _info(kube, job)
    release = _release_of(kube, job)
    click.echo(f"job {name}: study {info.study!r}, release {release.release}, namespace {kube.namespace}: {info.state}"
               + (f" ({info.reason}: {info.message})" if info.reason else ""))
    for pod in info.pods:
        click.echo(f"  runner pod {pod.describe()}")
        if pod.exit_code not in (None, 0) and pod.message:
            click.echo("    " + pod.message.strip().splitlines()[-1][:300])
        if pod.phase == "Running" and (waiting := _waiting(kube, pod.name)):
            click.echo(f"    {waiting}")
    counts = _counts(kube, job, via)
    click.echo(f"tasks: {counts.describe()}")
    if counts.executor:
        click.echo(f"keeps to executor {counts.executor} (it started on group(s) {', '.join(counts.groups) or '?'})")
    for group, executors in sorted(counts.by_group.items()):
        click.echo(f"  worker group {group}: " + ", ".join(f"{n} task(s) on {e}" for e, n in sorted(executors.items())))
    click.echo(f"release worker groups (executor): {release.describe_groups()}")


@jobs.command()
@click.argument("name", metavar="JOB")
@kube_options
@click.option("-f", "--follow", is_flag=True, help="Follow the runner's log (and the next runner pod's, if one "
              "replaces it) until the job finishes.")
def logs(name, namespace, kubeconfig, context, follow):
    """The runner pods' logs, oldest pod first."""
    kube = _connect(kubeconfig, context, namespace)
    job = _job(kube, name)
    shown: set[str] = set()
    while True:
        info = _info(kube, job)
        for pod in info.pods:
            if pod.name in shown or pod.phase == "Pending":
                continue
            shown.add(pod.name)
            click.echo(f"==> runner pod {pod.describe()} <==")
            path = kube.ns_path("pods", pod.name) + "/log"
            if follow and pod.phase == "Running":
                for line in kube.lines(path, {"follow": "true"}, what=f"following {pod.name}"):
                    click.echo(line)
            else:
                click.echo(kube.bytes(path, what=f"reading the log of {pod.name}").decode(errors="replace"), nl=False)
        if not follow or info.finished or info.state == "Suspended":
            return
        time.sleep(POLL_S)
        job = _job(kube, name)


@jobs.command()
@click.argument("name", metavar="JOB")
@kube_options
def cancel(name, namespace, kubeconfig, context):
    """Stop the job: its runner pod is stopped (results so far are kept); `resume` continues it."""
    kube = _connect(kubeconfig, context, namespace)
    info = _info(kube, _job(kube, name))
    if info.finished:
        raise click.ClickException(f"job {name} has already finished ({info.state}): nothing to cancel")
    kube.json("PATCH", kube.ns_path("jobs", name, "batch/v1"), {"spec": {"suspend": True}},
              content_type="application/merge-patch+json", what=f"suspending job {name}")
    click.echo(f"job {name} cancelled (suspended): its runner pod stops and writes the results that arrived; "
               f"`mops jobs resume {name} -n {kube.namespace}` runs what is missing")


@jobs.command()
@click.argument("name", metavar="JOB")
@kube_options
def resume(name, namespace, kubeconfig, context):
    """Run what the job has no result for, or failed retryably: a cancelled job continues, a finished one
    gets a new runner (same name, same study)."""
    from modelops.jobs.manifests import STUDY_KEY, runner_job, study_configmap, study_configmap_name

    kube = _connect(kubeconfig, context, namespace)
    job = _job(kube, name)
    info = _info(kube, job)
    if info.state == "Suspended":
        kube.json("PATCH", kube.ns_path("jobs", name, "batch/v1"), {"spec": {"suspend": False}},
                  content_type="application/merge-patch+json", what=f"resuming job {name}")
        click.echo(f"job {name} resumed: a new runner pod runs what has no result yet")
        return
    if not info.finished:
        raise click.ClickException(f"job {name} is {info.state}: nothing to resume")
    configmap = kube.get_or_none(kube.ns_path("configmaps", study_configmap_name(name)))
    if configmap is None:
        raise click.ClickException(f"job {name}: its study ConfigMap {study_configmap_name(name)} is gone; "
                                   "submit the study again")
    spec = configmap["data"][STUDY_KEY]
    container = next(c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "runner")
    template = _release_of(kube, job).job_template
    _delete_job(kube, name)
    deadline = time.monotonic() + 120
    while kube.get_or_none(kube.ns_path("jobs", name, "batch/v1")) is not None \
            or kube.get_or_none(kube.ns_path("configmaps", study_configmap_name(name))) is not None:
        if time.monotonic() > deadline:
            raise click.ClickException(f"job {name}: the old Job was not gone within 120 s; try again")
        time.sleep(1)
    created = kube.json("POST", kube.ns_path("jobs", group="batch/v1"),
                        runner_job(template, name, info.study, container["args"]), what=f"creating Job {name} again")
    kube.json("POST", kube.ns_path("configmaps"), study_configmap(created, spec))
    kube.json("PATCH", kube.ns_path("jobs", name, "batch/v1"), {"spec": {"suspend": False}},
              content_type="application/merge-patch+json", what=f"starting job {name}")
    click.echo(f"job {name} ({info.state}) resumed with a new runner: it runs what has no result yet or failed "
               "retryably; the results already stored are kept")


@jobs.command()
@click.argument("name", metavar="JOB")
@kube_options
@click.option("--timeout", type=click.FloatRange(min=1), help="Give up after this many seconds (exit 2).")
def wait(name, namespace, kubeconfig, context, timeout):
    """Wait for the job to finish; exit 0 when every task succeeded, 1 otherwise."""
    kube = _connect(kubeconfig, context, namespace)
    _job(kube, name)
    sys.exit(_wait(kube, name, timeout))


def _wait(kube, name: str, timeout: float | None) -> int:
    deadline = time.monotonic() + timeout if timeout else None
    last_line, next_progress = "", 0.0
    while True:
        job = _job(kube, name)
        info = _info(kube, job)
        now = time.monotonic()
        if info.finished or now >= next_progress:
            counts = _counts(kube, job)
            line = f"job {name}: {info.state}; tasks {counts.describe()}"
            if line != last_line:
                click.echo(line)
                last_line = line
            next_progress = now + PROGRESS_EVERY_S
            if info.finished:
                if info.reason:
                    click.echo(f"  {info.reason}: {info.message}")
                return 0 if info.state == "Complete" and counts.total is not None and counts.ok == counts.total else 1
        if info.state == "Suspended":
            click.echo(f"job {name} is suspended (cancelled): `mops jobs resume {name}` continues it")
            return 1
        if deadline and now > deadline:
            click.echo(f"job {name} did not finish within {timeout:g} s (it goes on)", err=True)
            return 2
        time.sleep(POLL_S)


@jobs.command()
@click.argument("name", metavar="JOB")
@kube_options
def delete(name, namespace, kubeconfig, context):
    """Delete the job's Job, pods and study ConfigMap (its results stay in the store)."""
    kube = _connect(kubeconfig, context, namespace)
    _job(kube, name)
    _delete_job(kube, name)
    click.echo(f"job {name} deleted; its results stay in the store")
