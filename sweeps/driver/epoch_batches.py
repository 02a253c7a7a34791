"""Epoch records sent to MLflow in batches by a thread, so that what the driver spends per trial
result does not grow with the runs it writes.

A function trainable's ``tune.report`` waits until the driver has processed the result; one
blocking ``log_batch`` per member per epoch (about 10 ms each on the sweep's own server) made a pack
of 80 cost the driver 0.7 s per epoch (``bench/driver_cost.py``). Here a result only queues its
members' metrics; a writer thread sends each run's backlog as one request (MLflow takes one run per
``log_batch``, at most 1000 metrics) every ``interval`` seconds. ``flush`` sends at once: before a
run is closed, at the sweep's end and when it is stopped. MLflow therefore lags Ray's records by at
most ``interval`` seconds plus one round of sending; a driver killed with a backlog loses nothing,
because the resume (and ``vaesweep sync``) writes every epoch MLflow lacks from Ray's results and
the checkpoints' histories.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from sweeps import hooks

MAX_METRICS = 1000  # per log_batch request (MLflow's ``mlflow.utils.validation``)
MAX_TAGS = 100


class EpochBatches:
    """Each run's unsent metrics and tags, sent by a daemon thread every ``interval`` seconds; a failed
    send keeps its records queued and is raised by the next ``raise_failure``."""

    def __init__(self, client: MlflowClient, interval: float | None = None) -> None:
        self.client = client
        self.interval = hooks.flush_seconds() if interval is None else interval  # MLflow's lag behind Ray at most
        self.pending: dict[str, tuple[list[Metric], dict[str, str]]] = {}
        self.queued = threading.Lock()  # guards pending
        self.sending = threading.Lock()  # one sender at a time: a run's records reach MLflow in order
        self.failure: Exception | None = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="vaesweep-mlflow-writer", daemon=True)
        self.thread.start()

    def add(self, run_id: str, metrics: list[Metric], tags: dict[str, str]) -> None:
        with self.queued:
            queued_metrics, queued_tags = self.pending.setdefault(run_id, ([], {}))
            queued_metrics.extend(metrics)
            queued_tags.update(tags)

    def flush(self, run_id: str | None = None) -> None:
        """Send ``run_id``'s backlog (every run's when None) now; raises what MLflow raised (the records
        not sent stay queued)."""
        with self.sending:
            with self.queued:
                ids = [run_id] if run_id is not None else list(self.pending)
                batches = {rid: self.pending.pop(rid) for rid in ids if rid in self.pending}
            for done, (rid, (metrics, tags)) in enumerate(batches.items()):
                sent = 0
                try:
                    for chunk, chunk_tags in requests(metrics, tags):
                        self.client.log_batch(rid, metrics=chunk, tags=chunk_tags)
                        sent += len(chunk) or 1
                except Exception:
                    unsent = {rid: (metrics[sent:], {} if sent else tags)}
                    self._requeue({**unsent, **dict(list(batches.items())[done + 1:])})
                    raise

    def raise_failure(self) -> None:
        """Raise (once) what the writer thread's last send raised."""
        failure, self.failure = self.failure, None
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Stop the thread and send what is left (raises what MLflow raised)."""
        self.stopped.set()
        self.flush()

    def discard(self) -> None:
        """Stop the thread and drop the backlog: a writer whose server was replaced (its records are
        written again from Ray's)."""
        self.stopped.set()
        with self.queued:
            self.pending.clear()

    def _requeue(self, batches: dict[str, tuple[list[Metric], dict[str, str]]]) -> None:
        """Put unsent records back ahead of any queued since."""
        with self.queued:
            for rid, (metrics, tags) in batches.items():
                later_metrics, later_tags = self.pending.get(rid, ([], {}))
                self.pending[rid] = ([*metrics, *later_metrics], {**tags, **later_tags})

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.flush()
            except Exception as err:  # noqa: BLE001 - reported to the driver's thread by raise_failure
                self.failure = err


def requests(metrics: list[Metric], tags: dict[str, str]) -> Iterator[tuple[list[Metric], list[RunTag]]]:
    """A run's backlog cut into requests MLflow accepts (the tags ride with the first)."""
    tag_list = [RunTag(key, value) for key, value in tags.items()]
    for start in range(0, max(len(metrics), 1), MAX_METRICS):
        yield metrics[start:start + MAX_METRICS], tag_list[:MAX_TAGS] if start == 0 else []
