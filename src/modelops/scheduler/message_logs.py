"""Bounded logs of a batched stream's recent messages, in the scheduler and in a study's client.

Each of distributed's batched streams (`BatchedSend`: the scheduler's to every worker and client, a
client's to the scheduler) keeps its last `distributed.admin.low-level-log-length` batches (1,000 by
default) for debugging, every batch under 1 MB whole. For a study, a batch is a chunk's specs (up to a few
thousand tasks each) or a refill's graph: 1,000 of them are every task of a 10^6-task study (measured: the
scheduler went from 69 to 303 MiB over 10^6 probe tasks, ~230 bytes a task, holding the specs of every
task it had sent to a worker). So modelops keeps the last RECENT_MESSAGES batches of those streams: at most
RECENT_MESSAGES MB each, whatever the study's size, and the rest of Dask's logs (transitions, events) as
configured.
"""

from __future__ import annotations

from collections import deque

from distributed.diagnostics.plugin import SchedulerPlugin

RECENT_MESSAGES = 16
PLUGIN_NAME = "modelops-message-logs"


def bound_message_log(batched_send, keep: int = RECENT_MESSAGES) -> None:
    """Keep at most `keep` recent batches in a BatchedSend's debugging log (the newest ones it has)."""
    log = getattr(batched_send, "recent_message_log", None)
    if log is not None and (log.maxlen is None or log.maxlen > keep):
        batched_send.recent_message_log = deque(log, maxlen=keep)


class MessageLogPlugin(SchedulerPlugin):
    """Bounds the scheduler's batched stream to each worker as the worker joins (the stream exists by then,
    and carries nothing before the worker's handshake). Its streams to clients carry small messages (a key
    finished, a key lost) and are left as they are."""

    name = PLUGIN_NAME
    idempotent = True

    async def start(self, scheduler) -> None:
        for comm in scheduler.stream_comms.values():  # workers that joined before the plugin
            bound_message_log(comm)

    def add_worker(self, scheduler, worker: str) -> None:
        if worker in scheduler.stream_comms:
            bound_message_log(scheduler.stream_comms[worker])
