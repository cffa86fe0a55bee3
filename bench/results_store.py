"""The results store's costs, side by side in one run, by hand:

    .venv/bin/python bench/results_store.py --tasks 100000 [--s3 s3://BUCKET/PREFIX] [--json out.json]

For each store (a local directory, and an S3-compatible server when --s3 names one: endpoint from
AWS_ENDPOINT_URL_S3, credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, e.g. the cluster's
versitygw with `source .cluster/env` and its credentials file):
  write    N trivial results through a JobWriter as `mops run --store` adds them (a batch end every
           100 results: Parquet batches of FLUSH_ROWS), closed: results/s;
  plan     a second job of the same study planned against the first: every task reusable. The lookup
           (reading the first job's ids, one membership test per task) per task, next to the same plan
           with --recompute (no lookup) and to generating the study's tasks alone;
  copy     the reused rows copied into the second job: results/s;
  read     the job's latest rows back as one table (what `mops results download` reads).
Results are built before the clock starts; the numbers are the store's, not the model's.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid

from modelops.results.plan import StorePlan
from modelops.results.store import JobRecord, ResultsStore
from modelops.study import Study
from modelops.tasks import TaskResult

DIGEST = "sha256:" + "cd" * 32
ENTRYPOINT = "bench:trivial"
REPLICATES = 10
ARRIVING_TOGETHER = 100  # results that come back from the scheduler at once


def make_study(n_tasks: int) -> Study:
    sets = -(-n_tasks // REPLICATES)
    return Study(name=f"store-bench-{n_tasks}", bundle="bench", replicates=REPLICATES, base_seed=7,
                 parameters=[{"i": i, "beta": 0.1 + i / sets} for i in range(sets)])


def record_of(task) -> dict:
    return TaskResult(
        task_id=task.task_id, status="ok", params=task.params, seed=task.seed, outputs={"x": task.seed % 97},
        provenance={"executor": "cold", "worker": "tcp://10.0.0.1:4000", "worker_group": "default",
                    "pid": 1000 + task.seed % 5000, "bundle": task.bundle, "bundle_digest": task.bundle_digest,
                    "started": 1.0e9, "duration_s": 0.001}).model_dump(mode="json")


def job_record(job: str, study: Study) -> JobRecord:
    return JobRecord(job=job, study=study.model_dump(mode="json", exclude_none=True), bundle_digest=DIGEST,
                     entrypoint=ENTRYPOINT, tasks=study.task_count(), created=time.time())


def bench_store(url: str, study: Study, records: list[dict]) -> dict:
    store = ResultsStore.open(url)
    store.prepare(wait=30)
    n = len(records)
    first, second = f"w-{uuid.uuid4().hex[:8]}", f"r-{uuid.uuid4().hex[:8]}"

    store.start_job(job_record(first, study))
    writer = store.writer(first)
    t0 = time.perf_counter()
    for i, record in enumerate(records, 1):
        writer.add(record)
        if i % ARRIVING_TOGETHER == 0:
            writer.batch_end()  # as the study loop does: written every FLUSH_ROWS (or FLUSH_SECONDS)
    writer.close()
    write_s = time.perf_counter() - t0
    batches = len(store.batch_keys(first))

    t0 = time.perf_counter()
    sum(1 for _ in study.iter_tasks(DIGEST, ENTRYPOINT))
    tasks_s = time.perf_counter() - t0

    record = store.start_job(job_record(second, study))
    t0 = time.perf_counter()
    plain = StorePlan(store, record, recompute=True)
    plain.classify(study.iter_tasks(DIGEST, ENTRYPOINT))
    plan_recompute_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = StorePlan(store, record)
    plan.classify(study.iter_tasks(DIGEST, ENTRYPOINT))
    plan_s = time.perf_counter() - t0
    assert plan.counts.reuse == n and plan.counts.run == 0, plan.counts

    writer = store.writer(second)
    t0 = time.perf_counter()
    copied = sum(1 for _ in plan.copy_reused(writer))
    writer.close()
    copy_s = time.perf_counter() - t0
    assert copied == n, copied

    t0 = time.perf_counter()
    rows = store.latest([second]).num_rows
    read_s = time.perf_counter() - t0
    assert rows == n, rows
    return {
        "store": store.description, "tasks": n, "batches": batches,
        "write_s": write_s, "write_per_s": n / write_s,
        "tasks_only_s": tasks_s, "plan_recompute_s": plan_recompute_s, "plan_reuse_s": plan_s,
        "lookup_us_per_task": (plan_s - plan_recompute_s) / n * 1e6,
        "plan_us_per_task": plan_s / n * 1e6,
        "copy_s": copy_s, "copy_per_s": n / copy_s, "read_s": read_s, "read_per_s": n / read_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--s3", help="s3://BUCKET/PREFIX of an S3-compatible server to measure too")
    parser.add_argument("--json", help="write the numbers here too")
    args = parser.parse_args()
    if args.tasks < REPLICATES or args.tasks % REPLICATES:
        parser.error(f"--tasks {args.tasks}: a multiple of {REPLICATES} (parameter sets x {REPLICATES} replicates)")
    study = make_study(args.tasks)
    t0 = time.perf_counter()
    records = [record_of(task) for task in study.iter_tasks(DIGEST, ENTRYPOINT)]
    print(f"{len(records)} results built in {time.perf_counter() - t0:.1f} s (not timed below)")
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        urls = [f"file://{tmp}/store"] + ([f"{args.s3.rstrip('/')}/bench-{uuid.uuid4().hex[:8]}"] if args.s3 else [])
        rows = [bench_store(url, study, records) for url in urls]
    print(f"\n| store | tasks | batches | write results/s | plan us/task (reuse) | of which lookup us/task | "
          f"plan us/task (--recompute) | tasks alone us/task | copy reused results/s | read results/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        n = r["tasks"]
        print(f"| {r['store']} | {n} | {r['batches']} | {r['write_per_s']:,.0f} | {r['plan_us_per_task']:.1f} | "
              f"{r['lookup_us_per_task']:.1f} | {r['plan_recompute_s'] / n * 1e6:.1f} | "
              f"{r['tasks_only_s'] / n * 1e6:.1f} | {r['copy_per_s']:,.0f} | {r['read_per_s']:,.0f} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)
    if "AWS_SECRET_ACCESS_KEY" in os.environ:
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in json.dumps(rows)


if __name__ == "__main__":
    main()
