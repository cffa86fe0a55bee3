"""The typed messages between the worker and its children survive the trip both ways: through the
protocol's own framing, and into a fresh interpreter (as an exec'd child or a zygote is) and back,
with every field, and a child's reply is read by attribute, never by string key."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from modelops.bundles.bundle import Bundle
from modelops.executors.child.runner import run_and_reply
from modelops.executors.protocol import Job, Reply, TaskMessage, ZygoteReady, ZygoteThreaded, recv, send
from modelops.failures import Failure, timed_out
from modelops.tasks import Task

BUNDLE = Bundle(name="sir", version="1.0.0", entrypoint="model:simulate", source="file", digest="sha256:" + "ab" * 32,
                import_path="/tmp/bundles/sir")
MESSAGES = [
    TaskMessage(Job("model:simulate", {"beta": 0.3, "n": 100}, 12345), BUNDLE),
    Reply.succeeded({"series": [1.0, 2.5], "blob": b"\x00\x01"}).from_process(4242, 10240, 1765000000.5),
    Reply.failed(Failure.from_exception("exception", ValueError("beta must be positive"))).from_process(4243),
    Reply.failed(timed_out(3.0)),
    ZygoteReady(pid=77, threads=1, thread_names=["MainThread"], import_errors=["scipy: ModuleNotFoundError: x"],
                import_rngs=[], import_s=0.41, warmup_s=0.12, warmup_error=None),
    ZygoteThreaded(pid=77, threads=3, thread_names=["MainThread", "pool-0", "pool-1"]),
]

# A fresh interpreter reads one message from fd IN and sends it back on fd OUT.
ECHO = textwrap.dedent("""
    import sys
    from modelops.executors.protocol import recv, send
    send(int(sys.argv[2]), recv(int(sys.argv[1])))
""")


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_each_message_round_trips_through_a_fresh_interpreter(message):
    to_r, to_w = os.pipe()
    back_r, back_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", ECHO, str(to_r), str(back_w)], pass_fds=(to_r, back_w))
    os.close(to_r)
    os.close(back_w)
    try:
        send(to_w, message)
        echoed = recv(back_r, deadline=None)
    finally:
        os.close(to_w)
        os.close(back_r)
        proc.wait(timeout=30)
    assert type(echoed) is type(message) and echoed == message


def test_a_task_message_is_built_from_a_task_and_frozen():
    task = Task.model_validate({"bundle": "sir", "bundle_digest": BUNDLE.digest, "entrypoint": "model:simulate",
                                "params": {"beta": 0.3}, "seed": 7})
    message = TaskMessage.of(task, BUNDLE)
    assert message.job == Job("model:simulate", {"beta": 0.3}, 7) and message.bundle is BUNDLE
    with pytest.raises(AttributeError):
        message.job.seed = 8  # type: ignore[misc]


def test_a_child_reply_carries_the_outcome_and_its_process(tmp_path):
    """`run_and_reply`, as a child runs it, answers a typed Reply with its PID and peak memory; a
    failing entrypoint gives a failed Reply whose error has the Failure fields."""
    (tmp_path / "model.py").write_text("def simulate(params, seed):\n    return {'x': params['x'] * 2, 'seed': seed}\n"
                                       "def broken(params, seed):\n    raise ValueError('no ' + str(seed))\n")
    bundle = Bundle(name="m", version="1", entrypoint="model:simulate", source="file", digest="sha256:" + "cd" * 32,
                    import_path=str(tmp_path))
    r, w = os.pipe()
    try:
        run_and_reply(w, TaskMessage(Job("model:simulate", {"x": 21}, 5), bundle), ready_at=1.5)
        ok = recv(r)
        run_and_reply(w, TaskMessage(Job("model:broken", {}, 9), bundle))
        failed = recv(r)
    finally:
        os.close(r)
        os.close(w)
    assert isinstance(ok, Reply) and ok.ok and ok.outputs == {"x": 42, "seed": 5}
    assert ok.pid == os.getpid() and ok.max_rss_kb > 0 and ok.ready_at == 1.5
    assert isinstance(failed, Reply) and not failed.ok and failed.outputs is None and failed.ready_at is None
    assert failed.error["kind"] == "exception" and failed.error["type"] == "ValueError"
    assert failed.error["message"] == "no 9" and set(failed.error) == set(Failure.__dataclass_fields__)
