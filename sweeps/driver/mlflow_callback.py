"""The sweep's only MLflow writer: a Ray Tune callback on the driver (the pattern of Ray's own
``MLflowLoggerCallback``, but with parent/child runs keyed by the ``ray_trial_id`` tag, so restores
and retries never duplicate a run).

Trials need no route to MLflow: every result reaches the driver anyway, and the driver writes it,
so the sweep's embedded store on 127.0.0.1 serves a multi-node cluster too. Tune pickles the
callback with the experiment and unpickles it on ``Tuner.restore``, so only the sweep's config travels
with it: at ``setup`` it makes its client for the driver run's tracking server (sweeps/driver/context.py)
and finds the experiment and parent run by name and tag. When the sweep's own server (the driver's
child) dies, the callback starts it again, once per death, says so, and writes into it what Ray
recorded and it lacks, then goes on. Any other tracking outage (a
remote server, or ours failing to start again) prints one warning and training goes on untracked;
Ray's trial results keep everything and ``vaesweep sync`` replays them through the same ``TrialRuns``.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from ray import tune

from analysis.metrics import ANALYSIS_FILE
from sweeps.config import SweepConfig
from sweeps.driver.context import current
from sweeps.driver.disk import is_disk_full
from sweeps.driver.epoch_batches import EpochBatches
from sweeps.failures import FATAL_KEY
from sweeps.packs import NODE_KEY, member_failures, member_folder, member_results, trial_points
from sweeps.layout import ANALYSIS_DIR
from sweeps.ray_files import error_line, trial_error
from sweeps.driver.run_writer import TrialRuns, ensure_parent_run, get_or_create_experiment
from vae.config import grid_point_label

CLOSE_THREADS = 8  # a finished pack's runs closed at once (the server answers each request in about 10 ms)


class MlflowTrialCallback(tune.Callback):
    """Writes each trial's child run from Tune's events: results per epoch, final artifacts, end state."""

    def __init__(self, sweep: SweepConfig) -> None:
        self.sweep = sweep
        self.runs: TrialRuns | None = None
        self.down = False
        self.failed: set[str] = set()  # pack members whose runs were closed FAILED
        self.filled: set[str] = set()  # trials whose records were brought up to their folders' on first sight
        self.cost: dict[str, list[float]] = {}  # seconds the driver spent per kind of write
        self.trials: list = []  # the experiment's trials, as Tune last passed them
        self.closer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaesweep-run-ends")  # one trial at a time
        self.closing: list = []  # its work: (future, the ends, stopped_at)

    def __getstate__(self) -> dict[str, Any]:
        """Only the sweep's config is pickled: everything else belongs to one driver run and starts afresh
        in the next (a restore unpickles this callback)."""
        return {"sweep": self.sweep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sweep"])

    def setup(self, **info: Any) -> None:
        self._write("open the sweep's runs", self._connect)

    def _connect(self) -> None:
        client = MlflowClient(current().tracking_uri)
        experiment_id = get_or_create_experiment(client, self.sweep.tracking.experiment)
        parent_run_id = ensure_parent_run(client, experiment_id, self.sweep.name, self.sweep.to_dict())
        if self.runs is not None and self.runs.batches is not None:  # a revived server: Ray's records refill it
            self.runs.batches.discard()
        self.runs = TrialRuns(client, experiment_id, parent_run_id, self.sweep, EpochBatches(client))

    def _write(self, action: str, fn, *args: Any) -> Any:
        """``fn(*args)``, timed; when the sweep's own server died, it is started again and ``fn`` retried;
        after any other failure, one warning and no more MLflow calls."""
        if self.down:
            return None
        start = time.perf_counter()
        try:
            try:
                return fn(*args)
            except Exception:  # noqa: BLE001 - tracking must never stop the sweep
                dead = self.runs
                if not self._revive():
                    raise
                if dead is not None and getattr(fn, "__self__", None) is dead:  # the same call on the new client
                    fn = getattr(self.runs, fn.__name__)
                return fn(*args)
        except Exception as err:  # noqa: BLE001 - tracking must never stop the sweep
            print(f"vaesweep: MLflow unavailable ({action}: {str(err).splitlines()[0][:200]}); training goes on "
                  f"untracked; the results stay in Ray's trial results: run `vaesweep sync {self.sweep.name}` "
                  "once the server is back", file=sys.stderr)
            self.down = True
            if self.runs is not None:  # its backlog is in Ray's records too
                self.runs.batches.discard()
            return None
        finally:
            self.cost.setdefault(action, []).append(time.perf_counter() - start)

    def _revive(self) -> bool:
        """Start the sweep's own server again if it died (True), connect to it and write what Ray recorded
        meanwhile; False when there is no such server to revive (a remote one, or ours still alive)."""
        from sweeps.driver.sync import fill_trial  # sync's replay: the same TrialRuns, each epoch once

        server = current().own_server
        if server is None or server.alive():
            return False
        print(f"vaesweep: the sweep's MLflow server stopped (its log: {server.log}); starting it again",
              file=sys.stderr)
        server.restart()
        self._connect()
        filled = sum(fill_trial(self.runs, self.sweep, trial)[1]["epochs"] for trial in self.trials)
        print(f"vaesweep: MLflow server back at {server.uri}; wrote the {filled} epoch records it had missed",
              file=sys.stderr)
        return True

    def _open(self, trial, point: dict[str, Any], node_id: str = "") -> str | None:
        """The key of ``point``'s run in ``trial`` (None once MLflow is down)."""
        if self.runs is None:
            return None
        return self._write("open run", self.runs.open, trial.trial_id, point, node_id)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        self.trials = trials
        self.collect_ends(wait=False)
        if "epoch" not in result:
            return
        if self.runs is not None:  # what the writer thread could not send, handled as any failed write
            self._write("send queued epochs", lambda: self.runs.batches.raise_failure())
        if trial.trial_id not in self.filled and self.runs is not None:
            from sweeps.driver.sync import fill_trial

            # On first sight (a resumed or rebuilt trial): the epochs the trial's results and its
            # checkpoint's history hold that MLflow lacks, e.g. those of a sweep stopped before its
            # callback wrote them whose Ray state was then lost.
            self.filled.add(trial.trial_id)
            self._write("fill a resumed trial", lambda: fill_trial(self.runs, self.sweep, trial))
        points = trial_points(self.sweep, trial.config)
        for point, metrics in member_results(points, result):
            if (key := self._open(trial, point, result.get(NODE_KEY, ""))) is not None:
                self._write("log metrics", self.runs.log_epoch, key, metrics)
        if FATAL_KEY in result:  # the trial ends for good: on_trial_error closes its runs, with the traceback
            return
        for point in points:  # a pack member that diverged: FAILED now, its pack mates go on
            label = grid_point_label(**point)
            error = member_failures(result).get(label)
            if error and label not in self.failed and (key := self._open(trial, point)) is not None:
                self.failed.add(label)
                self._write("end run", self.runs.close, key, "FAILED", error)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        """Ended by itself (all epochs) or by a scheduler (stopped early): FINISHED either way (but for a
        pack's diverged members, FAILED above). The members' final artifacts and ends are written in the
        background by ``CLOSE_THREADS`` threads, so that Tune goes on at once (a pack of 240 held the driver
        for its 240 closes in series); ``on_experiment_end`` waits for them."""
        self.trials = trials
        last = trial.last_result or {}
        epoch = last.get("epoch", 0)
        stopped_at = epoch if epoch < self.sweep.train.epochs else None
        # opened one by one: a run seen for the first time is recorded in runs.json
        keys = [(point, self._open(trial, point)) for point in trial_points(self.sweep, trial.config)]
        if self.runs is None or any(key is None for _, key in keys):
            return
        final = Path(trial.checkpoint.path) if trial.checkpoint is not None else None  # the sweep's own folder
        ends = [(key, member_folder(final, point) if final else None, grid_point_label(**point) not in member_failures(last))
                for point, key in keys]
        self.closing.append((self.closer.submit(self._end_runs, ends, stopped_at), ends, stopped_at))

    def _end_runs(self, ends: list[tuple[str, Path | None, bool]], stopped_at: int | None) -> None:
        """For each (run key, the member's final folder, finished): the final artifacts logged if the folder
        holds them, and the run ended FINISHED if finished; each is idempotent, so a retry redoes them all."""
        def end(key: str, folder: Path | None, finished: bool) -> None:
            if folder is not None and (folder / ANALYSIS_DIR / ANALYSIS_FILE).is_file():
                self.runs.log_final(key, folder)
            if finished:
                self.runs.close(key, "FINISHED", None, stopped_at)

        with ThreadPoolExecutor(max_workers=CLOSE_THREADS) as pool:
            for done in [pool.submit(end, *job) for job in ends]:
                done.result()  # the first failure is raised (the others have ended by then)

    def collect_ends(self, wait: bool) -> None:
        """The background ends that are over (all of them, once over, when ``wait``): one that failed is
        done again here, on the driver's thread, through ``_write`` (which revives the sweep's own server:
        a server must be started from the driver's thread, whose end stops it)."""
        pending = []
        for future, ends, stopped_at in self.closing:
            if not wait and not future.done():
                pending.append((future, ends, stopped_at))
            elif future.exception() is not None:
                self._write("log final artifacts and end runs", self._end_runs, ends, stopped_at)
        self.closing = pending

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        """Failed for good (retries spent): FAILED, with the error's last line; KILLED when the disk was
        full (the sweep stops, and resumes the trial once there is space: sweeps/driver/disk.py)."""
        self.trials = trials
        error = error_line(trial.error_file) or trial_error(trial) or "unknown error"
        failed = member_failures(trial.last_result or {})
        for point in trial_points(self.sweep, trial.config):
            if (key := self._open(trial, point)) is not None:
                status = "KILLED" if is_disk_full(error) else "FAILED"
                self._write("end run", self.runs.close, key, status, failed.get(grid_point_label(**point), error), None,
                            trial.error_file)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """The queued epochs sent (the sweep ended, or was stopped); with --verbose, one line on what writing
        MLflow cost the driver (the price of being the only writer)."""
        self.collect_ends(wait=True)
        if self.runs is not None:  # (self.runs read at the call: a revived server's runs when retried)
            self._write("send queued epochs", lambda: self.runs.batches.close())
        epochs = self.cost.get("log metrics", [])
        if epochs and current().verbose:
            print(f"vaesweep: MLflow on the driver: {1000 * sum(epochs) / len(epochs):.1f} ms per epoch result "
                  f"({len(epochs)} results), {sum(map(sum, self.cost.values())):.1f} s in all", file=sys.stderr)
