"""Studies that live in the cluster (issue 20): `mops jobs submit` from this machine, a runner pod (a Job of
the release) drives the study, results land in the release's store (a PVC bound by the cluster's real
provisioner, or the cluster tier's real S3 server) and come back with `mops results`; runner pods killed,
cancelled and resumed lose and repeat nothing; bad input is refused before anything is created."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cluster_support import (CHILD_PID_LINE, MOPS, REPO, check_fresh_process_per_task, load_results, run,
                             run_study_through_port_forward)

STUDY = REPO / "examples" / "sir" / "study.json"
N_STUDY = 12
JOB = re.compile(r"^Submitted job (\S+):", re.M)
JOBS_VALUES = ["jobs.enabled=true", "worker.replicas=2"]


def mops(rel, *args: str, env: dict | None = None, timeout: float = 300, check: bool = True,
         kubeconfig: str | None = None) -> subprocess.CompletedProcess:
    environ = {**rel.target.env, **(env or {})}
    if kubeconfig:
        environ["KUBECONFIG"] = kubeconfig
    namespaced = [*args, "-n", rel.namespace] if args[0] in ("jobs", "results") else list(args)
    return run([str(MOPS), *namespaced], env=environ, timeout=timeout, check=check)


def submit(rel, study: Path, *extra: str, **kw) -> str:
    """`mops jobs submit`; the sir bundle is pinned from this clone's examples/ (the image's copy)."""
    done = mops(rel, "jobs", "submit", str(study), "--release", rel.name, "--bundles-dir", str(REPO / "examples"),
                *extra, **kw)
    return JOB.search(done.stdout).group(1)


def wait_done(rel, job: str, timeout: float = 600) -> str:
    done = mops(rel, "jobs", "wait", job, "--timeout", str(timeout), timeout=timeout + 60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr + mops(rel, "jobs", "logs", job, check=False).stdout[-3000:]
    return done.stdout


def download(rel, job: str, tmp_path: Path, fmt: str = "jsonl", *extra: str, env: dict | None = None) -> Path:
    out = tmp_path / f"{job}-{uuid.uuid4().hex[:4]}.{fmt}"
    mops(rel, "results", "download", job, "--release", rel.name, "--format", fmt, "-o", str(out), *extra, env=env)
    return out


def child_runs(rel) -> Counter:
    """Task id -> times a child process started it, from every worker pod's own log."""
    return Counter(task for _, log in rel.worker_logs_by_ip().values() for _, task in CHILD_PID_LINE.findall(log))


def slow_study(path: Path, n: int, name: str = "slow", days: int = 60_000) -> Path:
    """n tasks of ~0.4 s each per 60,000 days (an epidemic that never dies out). The seed comes from
    the name: studies of the same release share its store, and identical tasks would be reused from an
    earlier test's job instead of run."""
    params = [{"beta": 0.05 + 0.001 * i, "gamma": 0.0, "days": days, "report_every": days // 3} for i in range(n)]
    seed = zlib.crc32(name.encode())
    path.write_text(json.dumps({"name": name, "bundle": "sir", "parameters": params, "base_seed": seed}))
    return path


def stored(rel, job: str, tmp_path: Path) -> list[dict]:
    try:
        return load_results(download(rel, job, tmp_path).read_text())
    except AssertionError:
        return []  # the runner has not written the job's record yet


def wait_stored(rel, job: str, tmp_path: Path, at_least: int, timeout: float = 180) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(found := stored(rel, job, tmp_path)) < at_least:
        assert time.monotonic() < deadline, f"job {job}: fewer than {at_least} results stored after {timeout} s"
        time.sleep(1)
    return found


def runner_pods(rel, job: str, running: bool = True) -> list[dict]:
    return rel.pods(f"batch.kubernetes.io/job-name={job}", running=running)


def created_for_jobs(rel) -> list[str]:
    return rel.kubectl("get", "jobs,configmaps", "-l", "modelops-dask.io/job", "-o", "name").split()


@pytest.fixture(scope="module")
def cold(releases):
    rel = releases.new()
    rel.install(["cold.yaml", "local.yaml"], sets=JOBS_VALUES)
    return rel


def test_a_study_submitted_from_outside_matches_the_same_study_run_through_a_port_forward(cold, tmp_path):
    t0 = time.time()
    job = submit(cold, STUDY)  # returns once the Job exists: the study goes on without this process
    submitted = time.time()
    assert not [p for p in runner_pods(cold, job, running=False) if p["status"].get("phase") == "Succeeded"]
    out = wait_done(cold, job)
    assert f"job {job}: Complete; tasks {N_STUDY}/{N_STUDY} done: {N_STUDY} ok" in out
    results = load_results(download(cold, job, tmp_path).read_text())
    check_fresh_process_per_task(cold, results, N_STUDY)  # a distinct (pod, PID) per task, in the pods' logs
    parquet = pq.read_table(download(cold, job, tmp_path, "parquet"))
    assert parquet.num_rows == N_STUDY and {"executor", "worker", "pid", "params.beta"} <= set(parquet.column_names)
    written = sorted(parquet["written_at"].to_pylist())
    print(f"MEASURE jobs submit: {submitted - t0:.2f} s; submit -> first result {written[0] - submitted:.2f} s, "
          f"-> last result {written[-1] - submitted:.2f} s")

    t1 = time.time()
    local = run_study_through_port_forward(cold, STUDY, tmp_path / "pf.jsonl")
    print(f"MEASURE mops run through a port-forward: {time.time() - t1:.2f} s for the same study")
    same = lambda rs: sorted((r["task_id"], r["seed"], json.dumps(r["outputs"], sort_keys=True)) for r in rs)  # noqa: E731
    assert same(results) == same(local)  # the same tasks, seeds and outputs, however they were submitted
    show = mops(cold, "results", "show", job, "--release", cold.name).stdout
    assert f"tasks: {N_STUDY}  succeeded: {N_STUDY}  failed: 0" in show
    assert f"distinct (worker, PID) pairs: {N_STUDY} for {N_STUDY} task(s) computed" in show


def test_the_operators_commands_work_verbatim_on_a_cold_release(cold):
    """As typed by an operator: `kubectl logs -l` shows only the last 10 lines of each pod."""
    wait_done(cold, submit(cold, STUDY, "--recompute"))  # every worker pod has run tasks lately
    env = cold.target.env
    for grep in ("Executor:", "Child process PID", "Cold runner"):
        shell = f"'{cold.target.kubectl_bin}' logs -l app=dask-worker -n {cold.namespace} | grep \"{grep}\""
        done = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and grep in done.stdout, (grep, done.stdout, done.stderr)
    executor = subprocess.run(["bash", "-c", f"'{cold.target.kubectl_bin}' logs -l app=dask-worker -n "
                               f"{cold.namespace} --tail=-1 | grep 'Executor:'"], env=env, capture_output=True,
                              text=True, timeout=60).stdout
    assert "Executor: cold" in executor and "Executor: isolated_warm" not in executor
    scheduler = cold.kubectl("get", "pods", "-l", "app=dask-scheduler", "-o", "name").split()
    assert len(scheduler) == 1
    logs = "".join(cold.logs(p["metadata"]["name"]) for p in cold.pods())
    # one "Cold runner started" per task run in the pod, not one per pre-forked spare
    assert logs.count("Cold runner started: PID") == logs.count("Child process PID")


def test_one_version_line_instead_of_distributeds_table(cold, tmp_path):
    with cold.port_forward() as address:
        done = run([str(MOPS), "run", str(STUDY), "--scheduler", address, "--output", str(tmp_path / "r.jsonl")],
                   check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Mismatched versions found" not in done.stderr and "+-------" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("Versions differ")]
    assert len(lines) <= 1, lines  # this machine's Python may equal the image's: then nothing is said
    if lines:
        assert "in the cluster" in lines[0]


@pytest.mark.parametrize("force", [False, True], ids=["graceful", "forced"])
def test_a_runner_pod_deleted_mid_study_loses_and_repeats_nothing(cold, tmp_path, force):
    n = 60
    name = f"slow-{'forced' if force else 'graceful'}"
    job = submit(cold, slow_study(tmp_path / "slow.json", n, name=name, days=200_000))
    before = child_runs(cold)
    wait_stored(cold, job, tmp_path, 8)
    first = runner_pods(cold, job)
    assert len(first) == 1
    deleted_at = time.time()
    args = ["delete", "pod", first[0]["metadata"]["name"], "--wait=false"]
    cold.kubectl(*args, *(["--grace-period=0", "--force"] if force else []))
    wait_done(cold, job)
    results = stored(cold, job, tmp_path)
    assert len(results) == n and len({r["task_id"] for r in results}) == n and {r["status"] for r in results} == {"ok"}
    ran = child_runs(cold) - before
    assert set(ran) == {r["task_id"] for r in results}
    # the deleted pod is gone from the API; the Job made another one, which finished the study
    pods = [p["metadata"]["name"] for p in runner_pods(cold, job, running=False)]
    assert len(pods) == 1 and pods != [first[0]["metadata"]["name"]], pods
    parquet = pq.read_table(download(cold, job, tmp_path, "parquet"))
    kept = {tid for tid, at in zip(parquet["task_id"].to_pylist(), parquet["written_at"].to_pylist())
            if at < deleted_at}
    assert len(kept) >= 8
    again = {tid: count for tid, count in ran.items() if count > 1}
    assert not set(again) & kept, "a task whose result was stored before the runner died ran again"
    print(f"MEASURE runner pod deleted ({'forced' if force else 'graceful'}): {len(kept)} stored before, "
          f"{len(again)} in flight ran again, every task exactly once in the results")


def test_cancel_then_resume_and_more_replicates_run_only_the_new_seeds(cold, tmp_path):
    job = submit(cold, slow_study(tmp_path / "cancel.json", 40, name="cancel-me", days=300_000))
    wait_stored(cold, job, tmp_path, 5)
    done = mops(cold, "jobs", "cancel", job)
    assert "cancelled (suspended)" in done.stdout
    deadline = time.monotonic() + 120
    while [p for p in runner_pods(cold, job, running=False) if p["status"].get("phase") in ("Running", "Pending")]:
        assert time.monotonic() < deadline, "the cancelled job's runner pod did not stop"
        time.sleep(1)
    status = mops(cold, "jobs", "status", job).stdout
    assert f"job {job}: study 'cancel-me'" in status and ": Suspended" in status, status
    partial = len(stored(cold, job, tmp_path))
    assert 5 <= partial < 40
    assert "resumed" in mops(cold, "jobs", "resume", job).stdout
    wait_done(cold, job)
    assert len({r["task_id"] for r in stored(cold, job, tmp_path)}) == 40

    three = tmp_path / "three.json"
    three.write_text(json.dumps({**json.loads(STUDY.read_text()), "name": "replicates", "base_seed": 99}))
    six = tmp_path / "six.json"
    six.write_text(json.dumps({**json.loads(three.read_text()), "replicates": 6}))
    first = submit(cold, three)
    wait_done(cold, first)
    before = child_runs(cold)
    second = submit(cold, six)
    wait_done(cold, second)
    ran = child_runs(cold) - before  # counted from the pods' `Child process PID` lines
    results = stored(cold, second, tmp_path)
    assert len(results) == 24
    reused = {r["task_id"] for r in results if r["provenance"]["reused_from"] == first}
    assert len(reused) == 12 and sum(ran.values()) == 12 and not set(ran) & reused
    assert "12 reused" in mops(cold, "jobs", "status", second).stdout


def test_the_runner_service_account_has_no_api_access_and_no_token(cold):
    account = f"system:serviceaccount:{cold.namespace}:{cold.name}-modelops-dask-runner"
    for verb, resource in (("get", "secrets"), ("list", "secrets"), ("create", "pods"), ("create", "jobs"),
                           ("get", "configmaps")):
        answer = cold.kubectl("auth", "can-i", verb, resource, "--as", account, check=False).strip()
        assert answer == "no", (verb, resource, answer)
    spec = json.loads(cold.kubectl("get", "configmap", f"{cold.name}-modelops-dask-jobs", "-o",
                                   "jsonpath={.data.runner\\.json}"))["job"]["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False


def test_bad_input_is_refused_naming_it_and_creates_nothing(cold, tmp_path, target):
    before = created_for_jobs(cold)
    bad_study = tmp_path / "bad.json"
    bad_study.write_text('{"name": "b", "bundle": "sir", "parameters": [], "replicates": 0}')
    missing_bundle = tmp_path / "missing.json"
    missing_bundle.write_text(json.dumps({"name": "m", "bundle": "no_such_bundle", "parameters": [{"a": 1}]}))
    cases = [
        ((str(STUDY), "--release", "no-such-release"), "no release 'no-such-release' with jobs enabled in namespace"),
        ((str(bad_study), "--release", cold.name), f"study file {bad_study}: parameters"),
        ((str(missing_bundle), "--release", cold.name), "bundle 'no_such_bundle' not found on this machine"),
        ((str(STUDY), "--release", cold.name, "--group", "gpu"), "has no worker group 'gpu'; its groups (executor): "
                                                                  "default (cold)"),
        ((str(STUDY), "--release", cold.name, "--executor", "isolated_warm"), "no worker group runs executor "
                                                                             "'isolated_warm'"),
    ]
    for args, says in cases:
        done = mops(cold, "jobs", "submit", *args, check=False)
        assert done.returncode != 0 and says in done.stderr, (args, done.stderr)
        assert "nothing was submitted" in done.stderr
    # a user without the submitter role (a ServiceAccount with no RBAC) is told so, and creates nothing
    nobody = kubeconfig_for(cold, target, "nobody", tmp_path)
    done = mops(cold, "jobs", "submit", str(STUDY), "--release", cold.name, check=False, kubeconfig=nobody)
    assert done.returncode != 0 and "may not read ConfigMaps" in done.stderr, done.stderr
    assert created_for_jobs(cold) == before


def kubeconfig_for(rel, target, account: str, tmp_path: Path) -> str:
    """A kubeconfig of this cluster that authenticates as a new ServiceAccount of the release's namespace."""
    rel.kubectl("create", "serviceaccount", account, check=False)
    token = rel.kubectl("create", "token", account, "--duration", "1h").strip()
    admin = json.loads(target.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    cluster = admin["clusters"][0]
    path = tmp_path / f"{account}.kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account,
                                                    "namespace": rel.namespace}}],
        "current-context": account}))
    os.chmod(path, 0o600)
    return str(path)


def test_a_submitter_bound_by_the_chart_can_submit_with_nothing_more(releases, target, tmp_path):
    rel = releases.new()
    rel.install(["cold.yaml", "local.yaml"], sets=[*JOBS_VALUES, "worker.replicas=1",
                                                   "jobs.submitters.subjects[0].kind=ServiceAccount",
                                                   "jobs.submitters.subjects[0].name=scientist"])
    scientist = kubeconfig_for(rel, target, "scientist", tmp_path)
    job = submit(rel, STUDY, kubeconfig=scientist)
    assert wait_done(rel, job)
    out = mops(rel, "results", "download", job, "--release", rel.name, "--format", "csv", "-o", "-",
               kubeconfig=scientist).stdout
    assert len(out.strip().splitlines()) == N_STUDY + 1
    listed = mops(rel, "jobs", "list", kubeconfig=scientist).stdout
    assert job in listed and "Complete" in listed
    for verb, resource in (("get", "secrets"), ("create", "pods"), ("delete", "deployments")):
        account = f"system:serviceaccount:{rel.namespace}:scientist"
        assert rel.kubectl("auth", "can-i", verb, resource, "--as", account, check=False).strip() == "no"


# -- the object store --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_release(releases, target):
    if not target.s3_endpoint:
        pytest.skip("the cluster's env file names no object store (S3_ENDPOINT): kind runs have none")
    rel = releases.new()
    creds = target.s3_credentials()
    rel.kubectl("create", "secret", "generic", "results-s3", f"--from-literal=AWS_ACCESS_KEY_ID={creds['AWS_ACCESS_KEY_ID']}",
                f"--from-literal=AWS_SECRET_ACCESS_KEY={creds['AWS_SECRET_ACCESS_KEY']}")
    rel.install(["cold.yaml", "local.yaml"], sets=[
        *JOBS_VALUES, f"results.url=s3://{target.s3_bucket}/{rel.namespace}", f"results.s3.endpoint={target.s3_endpoint}",
        "results.s3.region=us-east-1", "results.s3.existingSecret=results-s3"])
    return rel


def test_an_s3_store_survives_the_object_store_stopping_mid_study(s3_release, target, tmp_path):
    rel, n = s3_release, 40
    creds = target.s3_credentials()
    job = submit(rel, slow_study(tmp_path / "s3.json", n, name="s3-outage", days=300_000))
    wait_stored(rel, job, tmp_path, 5)
    before = child_runs(rel)
    run(["bash", str(REPO / "cluster" / "objectstore.sh"), "stop"], timeout=60)
    try:
        time.sleep(8)  # tasks go on; the runner holds their results and retries
    finally:
        run(["bash", str(REPO / "cluster" / "objectstore.sh"), "start"], timeout=120)
    wait_done(rel, job)
    via_cluster = load_results(download(rel, job, tmp_path, "jsonl", "--via", "cluster").read_text())
    direct_env = {**creds, "AWS_ENDPOINT_URL_S3": target.s3_endpoint}
    via_s3 = load_results(download(rel, job, tmp_path, "jsonl", "--via", "direct", env=direct_env).read_text())
    assert sorted(r["task_id"] for r in via_cluster) == sorted(r["task_id"] for r in via_s3)
    assert len(via_cluster) == n and len({r["task_id"] for r in via_cluster}) == n
    ran = child_runs(rel) - before
    assert not [t for t, c in ran.items() if c > 1], "a task ran twice while the store was away"
    logs = mops(rel, "jobs", "logs", job).stdout
    assert "unreachable" in logs and "retrying in" in logs
    # the credentials are nowhere but in their Secret
    secret = creds["AWS_SECRET_ACCESS_KEY"]
    job_spec = rel.kubectl("get", "job", job, "-o", "json")
    assert secret not in job_spec and secret not in logs
    assert secret not in json.dumps(via_cluster) and secret not in rel.helm("get", "manifest", rel.name).stdout


def test_a_release_whose_store_is_unreachable_refuses_submissions(releases, target, tmp_path):
    if not target.s3_endpoint:
        pytest.skip("the cluster's env file names no object store (S3_ENDPOINT)")
    rel = releases.new()
    rel.kubectl("create", "secret", "generic", "results-s3", "--from-literal=AWS_ACCESS_KEY_ID=x",
                "--from-literal=AWS_SECRET_ACCESS_KEY=y")
    dead = target.s3_endpoint.rsplit(":", 1)[0] + ":1"  # nothing listens there
    rel.install(["cold.yaml", "local.yaml"], sets=[
        "jobs.enabled=true", f"results.url=s3://{target.s3_bucket}/x", f"results.s3.endpoint={dead}",
        "results.s3.existingSecret=results-s3"])
    done = mops(rel, "jobs", "submit", str(STUDY), "--release", rel.name, check=False, timeout=120)
    assert done.returncode != 0, done.stdout
    assert f"the release's results store s3://{target.s3_bucket}/x" in done.stderr
    assert "is not reachable from the cluster" in done.stderr and "nothing was submitted" in done.stderr
    assert created_for_jobs(rel) == []
