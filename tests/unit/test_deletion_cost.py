"""The pod-deletion-cost sidecar without Kubernetes: the cost of each pod from its workers' running tasks (the
scheduler's side), the checks on the scheduler's page, the throttle (a pass at most every interval, a patch
only on change), the API calls' shapes against a local HTTP server, a failing API logged once without
raising, and a sidecar that loads no Dask."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from modelops.scheduler.pod_costs import pod_costs
from modelops.sidecar.deletion_cost import DeletionCostKeeper, SchedulerUnavailable, parse_costs
from modelops.sidecar.kube_api import DELETION_COST as ANNOTATION
from modelops.sidecar.kube_api import ApiError, InClusterApi


def worker(host: str, processing: int, nthreads: int = 1):
    return SimpleNamespace(host=host, processing=set(range(processing)), nthreads=nthreads)


def test_a_pods_cost_is_its_worker_processes_running_tasks_at_most_their_threads():
    workers = [
        worker("10.0.0.1", 0),
        worker("10.0.0.2", 2, nthreads=1),  # one running, one queued on the worker: 1
        worker("10.0.0.3", 1, nthreads=2),
        worker("10.0.0.3", 3, nthreads=2),  # a second process of the same pod (nworkers 2)
    ]
    assert pod_costs(workers) == {"10.0.0.1": 0, "10.0.0.2": 1, "10.0.0.3": 3}


class FakeApi:
    def __init__(self, pods: dict[str, tuple[str, int]]):
        self.listed, self.patched, self.fail = 0, [], None
        self.found = pods

    def pods(self, selector):
        if self.fail:
            raise ApiError(self.fail)
        self.listed += 1
        return dict(self.found)

    def set_deletion_cost(self, pod, cost):
        if self.fail:
            raise ApiError(self.fail)
        self.patched.append((pod, cost))


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_patches_only_changed_costs_at_most_once_per_interval():
    api = FakeApi({"10.0.0.1": ("w-a", 0), "10.0.0.2": ("w-b", 0)})
    clock = Clock()
    keeper = DeletionCostKeeper(api, "sel", interval=2.0, clock=clock)
    assert keeper.sync({"10.0.0.1": 1, "10.0.0.2": 0}) == {"w-a": 1}  # w-b is 0, as it already is
    assert api.listed == 1
    clock.now += 1.0
    assert keeper.sync({"10.0.0.1": 0, "10.0.0.2": 1}) == {}  # within the interval: nothing
    clock.now += 1.0
    assert keeper.sync({"10.0.0.1": 0, "10.0.0.2": 1}) == {"w-a": 0, "w-b": 1}
    clock.now += 2.0
    assert keeper.sync({"10.0.0.1": 0, "10.0.0.2": 1}) == {}  # unchanged: no patch
    assert api.patched == [("w-a", 1), ("w-a", 0), ("w-b", 1)]
    assert api.listed == 1  # the pods are listed again only for an unknown worker address


def test_a_new_worker_pod_is_looked_up_and_a_cost_a_previous_scheduler_wrote_is_kept_or_corrected():
    api = FakeApi({"10.0.0.1": ("w-a", 3)})
    clock = Clock()
    keeper = DeletionCostKeeper(api, "sel", interval=1.0, clock=clock)
    assert keeper.sync({"10.0.0.1": 0}) == {"w-a": 0}  # written 3 by someone before: corrected
    api.found = {"10.0.0.1": ("w-a", 0), "10.0.0.9": ("w-new", 0)}
    clock.now += 1.0
    assert keeper.sync({"10.0.0.1": 0, "10.0.0.9": 2}) == {"w-new": 2}
    assert api.listed == 2
    # a worker no pod of the release has (connected from elsewhere) is looked up once, not at every pass
    for _ in range(3):
        clock.now += 1.0
        keeper.sync({"10.0.0.1": 1, "10.0.0.9": 2, "192.168.1.5": 1})
    assert api.listed == 3


def test_a_failing_api_is_logged_once_retried_later_and_its_recovery_logged(caplog):
    api = FakeApi({"10.0.0.1": ("w-a", 0)})
    api.fail = "GET /api/v1/namespaces/sims/pods: HTTP 403 Forbidden: pods is forbidden"
    clock = Clock()
    keeper = DeletionCostKeeper(api, "sel", interval=2.0, retry_interval=60.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="modelops.sidecar.deletion_cost"):
        for _ in range(5):
            assert keeper.sync({"10.0.0.1": 1}) == {}
            clock.now += 2.0
        clock.now += 60.0
        assert keeper.sync({"10.0.0.1": 1}) == {}
        api.fail = None
        clock.now += 60.0
        assert keeper.sync({"10.0.0.1": 1}) == {"w-a": 1}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "HTTP 403 Forbidden" in warnings[0].getMessage() and "busy worker pods" in warnings[0].getMessage()
    assert sum("answers again" in r.getMessage() for r in caplog.records) == 1


class ApiServer(BaseHTTPRequestHandler):
    calls: list = []
    status = 200

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self.calls.append(("GET", self.path, self.headers["Authorization"], None, None))
        self._reply({"items": [
            {"metadata": {"name": "w-a", "annotations": {ANNOTATION: "2"}}, "spec": {}, "status": {"podIP": "10.0.0.1"}},
            {"metadata": {"name": "w-gone", "deletionTimestamp": "x"}, "spec": {}, "status": {"podIP": "10.0.0.2"}},
            {"metadata": {"name": "w-pending"}, "spec": {}, "status": {}},
        ]} if self.status == 200 else {"message": "pods is forbidden: User cannot list pods"})

    def do_PATCH(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(("PATCH", self.path, self.headers["Authorization"], self.headers["Content-Type"], body))
        self._reply({})

    def log_message(self, *args):
        pass


@pytest.fixture
def api_server():
    ApiServer.calls, ApiServer.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), ApiServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def service_account(tmp_path):
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "namespace").write_text("sims")
    return tmp_path


def test_the_api_calls_list_by_selector_and_merge_patch_the_annotation(tmp_path, api_server):
    api = InClusterApi(service_account(tmp_path), host=api_server)
    assert api.pods("app.kubernetes.io/component=worker,app.kubernetes.io/instance=rel") == {"10.0.0.1": ("w-a", 2)}
    api.set_deletion_cost("w-a", 0)
    (get, patch) = ApiServer.calls
    assert get[:3] == ("GET", "/api/v1/namespaces/sims/pods?labelSelector=app.kubernetes.io%2Fcomponent%3Dworker"
                              "%2Capp.kubernetes.io%2Finstance%3Drel", "Bearer tok")
    assert patch == ("PATCH", "/api/v1/namespaces/sims/pods/w-a", "Bearer tok", "application/merge-patch+json",
                     {"metadata": {"annotations": {ANNOTATION: "0"}}})


def test_api_failures_are_api_errors_naming_the_call_and_cause(tmp_path, api_server):
    ApiServer.status = 403
    api = InClusterApi(service_account(tmp_path), host=api_server)
    with pytest.raises(ApiError, match="GET /api/v1/namespaces/sims/pods.*HTTP 403.*pods is forbidden"):
        api.pods("a=b")
    unreachable = InClusterApi(service_account(tmp_path), host="http://127.0.0.1:9", timeout=2)
    with pytest.raises(ApiError, match="PATCH /api/v1/namespaces/sims/pods/w-a"):
        unreachable.set_deletion_cost("w-a", 1)
    with pytest.raises(ApiError, match="no ServiceAccount token"):
        InClusterApi(tmp_path / "nowhere")


def test_the_scheduler_page_is_checked_before_anything_is_patched():
    assert parse_costs(b'{"pods": {"10.0.0.1": 0, "10.0.0.2": 3}}') == {"10.0.0.1": 0, "10.0.0.2": 3}
    for page, says in [
        (b"<html>", "not a pod-costs page"),
        (b'{"groups": {}}', "not a pod-costs page"),
        (b'{"pods": []}', "'pods' is a list"),
        (b'{"pods": {"10.0.0.1": -1}}', "cost -1 is not an integer from 0"),
        (b'{"pods": {"10.0.0.1": "7"}}', "cost '7' is not an integer"),
        (b'{"pods": {"10.0.0.1": true}}', "cost True is not an integer"),
        (b'{"pods": {"10.0.0.1": 1e12}}', "is not an integer from 0 to 1000000"),
    ]:
        with pytest.raises(SchedulerUnavailable, match=re.escape(says)):
            parse_costs(page)


def test_the_sidecar_loads_no_dask():
    """The process that holds the token runs no Dask code: importing it loads neither dask nor distributed."""
    code = ("import sys, modelops.sidecar.deletion_cost; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'cloudpickle')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
