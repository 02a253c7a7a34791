"""``vaesweep report``: the study's figures and tables from a sweep's MLflow runs.

Writes ``fig1_spectrum``, ``fig2_active_components``, ``fig2_bounds``, ``fig3_probes``,
``fig4_geodesics``, ``fig5_interpolations`` (PNG and PDF), ``summary.csv`` (mean / std / count over
seeds per alpha, k and metric), ``trials.csv`` and ``verdicts.json`` (analysis/verdict_record.py) and a
self-contained ``report.html``, and logs them under ``report/`` in the sweep's parent run. Each figure's
caption says what the study's figure shows, the claim it tests and this sweep's verdict on it
(analysis/claims.py). Works on a partial sweep: grid points without a finished run and finished runs
missing a metric are listed, not fatal.
"""

from __future__ import annotations

import base64
import html
import io
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import yaml
from matplotlib import pyplot as plt
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.aggregate import missing_metrics, pivot_summary, stopped_early, summarize, with_grid
from analysis.captions import Caption, figure_captions
from analysis.claims import Verdict, nearest_to_one, verdicts
from analysis.figures import (PROBE_PANELS, active_components_figure, bounds_figure, geodesic_figure,
                              interpolation_figure, probes_figure, spectrum_figure)
from analysis.metrics import EIGENVALUE_KEY, FINAL_METRICS, GRID, UNLABELLED_FINAL_METRICS, MetricName
from analysis.verdict_record import verdict_table, write_verdict_record
from sweeps.config import ConfigError, SweepConfig, sweep_path
from sweeps.layout import REPORT_DIR, SWEEP_FILE, read_data_record, read_tracking, saved_config
from sweeps.mlflow_server import TrackingError, store_problem, with_restart
from sweeps.readers.runs import run_frames
from sweeps.tracking import child_runs
from vae.data_spec import OWN_KINDS, spec_title
from vae.config import grid_point_label
from vae.formats import data_record_of_earlier

# Figure 4 is geometry, not data: pairs of univariate Gaussians like the study's (mu1, s1, mu2, s2).
GEODESIC_PAIRS = np.array([[-2.0, 0.5, 2.0, 0.5], [-1.0, 0.2, 1.5, 1.0], [0.0, 0.3, 0.5, 2.0], [-2.5, 1.0, 1.0, 0.1]])
T = TypeVar("T")
HISTORY_KEYS = [*PROBE_PANELS, EIGENVALUE_KEY]  # the metric histories the figures draw (3 and 1)


def with_sweep_clients(sweep_dir: Path, tracking: dict[str, Any],
                       work: Callable[[MlflowClient, Callable[[], MlflowClient]], T], say: Callable[[str], None]) -> T:
    """``work(store, connect)``. ``store`` searches the runs: for the embedded store its sqlite file, read
    beside its one writer (as fast as through a server). ``connect()`` gives a client of a server of the
    sweep, for what needs one (metric histories in bulk, artifacts): for the embedded store the sweep's
    own, started first, so the search overlaps its start, and started again once if it dies under the
    report (sweeps/mlflow_server.py). A remote server that fails is one line (TrackingError)."""
    uri = tracking["tracking_uri"]
    try:
        if uri.startswith("sqlite:"):
            return with_restart(sweep_dir, lambda server: work(MlflowClient(uri), lambda: MlflowClient(server.wait())), say)
        client = MlflowClient(uri)
        return work(client, lambda: client)
    except (MlflowException, OSError) as err:
        raise TrackingError(f"MLflow at {uri} failed ({str(err).splitlines()[0][:200]}); check the server and "
                            "run the report again") from None


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def expected_points(config: SweepConfig) -> list[str]:
    return [grid_point_label(t.alpha, t.k, t.seed) for t in config.grid_points()] if config.search == "grid" else []


def interpolations(client: MlflowClient, trials: pd.DataFrame, chosen: str | None, workdir: Path,
                   notes: list[str]) -> tuple[np.ndarray, pd.Series] | None:
    """Figure 5's rows and trial: ``chosen`` or the best finished trial by IS log-likelihood; None (with a
    note saying why) when there is none or it lacks the artifact."""
    finished = trials[trials["status"] == "FINISHED"].dropna(subset=[MetricName.test_log_likelihood])
    run_id = chosen or (finished.sort_values(MetricName.test_log_likelihood, ascending=False)["run_id"].iloc[0]
                        if len(finished) else None)
    if run_id is None:
        notes.append("Figure 5: no finished trial with a test log-likelihood yet")
        return None
    try:
        rows = np.load(client.download_artifacts(run_id, "analysis/interpolations.npy", str(workdir)))
    except Exception as err:  # noqa: BLE001 - a missing or damaged artifact is reported, not fatal
        notes.append(f"Figure 5: run {run_id} has no readable interpolations artifact ({str(err).splitlines()[0][:120]})")
        return None
    return rows, trials[trials["run_id"] == run_id].iloc[0]


def build_figures(client: MlflowClient, config: SweepConfig, data: dict[str, Any], trials: pd.DataFrame,
                  history: pd.DataFrame, chosen: str | None, workdir: Path, margin: float | None
                  ) -> tuple[dict[str, Any], dict[str, Caption], dict[str, Verdict], list[str]]:
    """The figures and their captions by file stem, the claims' verdicts (``margin``: None for the sweep's
    eval.equivalence_margin), and notes on what could not be drawn."""
    notes: list[str] = []
    summary = summarize(trials)
    finished = trials[trials["status"] == "FINISHED"]
    spectra = with_grid(history[history["key"] == EIGENVALUE_KEY], trials)
    probes = with_grid(history[history["key"].isin(list(PROBE_PANELS))], trials)
    probe_alpha = nearest_to_one(probes["alpha"])
    pixels = finished[MetricName.final_probe_pixels].dropna()
    figures = {
        "fig1_spectrum": spectrum_figure(spectra, config.eval.epsilon),
        "fig2_active_components": active_components_figure(summary),
        "fig2_bounds": bounds_figure(summary, config.eval.bound_samples, config.eval.is_samples),
    }
    if not data["labels"]:
        notes.append(f"Figure 3: {data['title']} has no labels, so no probes were run (no probe accuracies anywhere)")
    elif probe_alpha is None:
        notes.append("Figure 3: no trial has logged a probe accuracy yet")
    else:
        figures["fig3_probes"] = probes_figure(probes[probes["alpha"] == probe_alpha],
                                               float(pixels.mean()) if len(pixels) else None, probe_alpha)
    for figure in figures.values():  # every figure drawn from the data names it (Figure 4 is illustrative)
        figure.suptitle(f"{data['title']}: sweep {config.name}", fontsize=9)
        figure.tight_layout()
    figures["fig4_geodesics"] = geodesic_figure(*GEODESIC_PAIRS.T)
    shown = interpolations(client, trials, chosen, workdir, notes)
    if shown is not None:
        rows, trial = shown
        title = f"{data['title']}, {run_name_of(trial)} (run {trial.run_id[:8]}, IS log-lik {trial.test_log_likelihood:.2f})"
        figures["fig5_interpolations"] = interpolation_figure(rows, title)
    judged = verdicts(trials, probe_alpha, config.eval.equivalence_margin if margin is None else margin)
    captions = figure_captions(judged, config.train.epochs, config.eval.epsilon, config.eval.bound_samples,
                               config.eval.is_samples, probe_alpha, GEODESIC_PAIRS, shown, data["title"])
    return figures, captions, judged, notes


def metric_labels(config: SweepConfig) -> dict[str, str]:
    """The summary table's row names (the README's wording), with this sweep's sample counts."""
    bound, samples = config.eval.bound_samples, config.eval.is_samples
    return {MetricName.test_log_likelihood: f"test IS log-likelihood, {samples} samples (nats)",
            MetricName.test_vr_bound_alpha: f"test VR bound at the trial's alpha, {bound} samples",
            MetricName.test_vr_bound_0: f"test IWAE bound (alpha=0), {bound} samples",
            MetricName.active_components: f"active components (PCA eigenvalue > {config.eval.epsilon:g})",
            MetricName.active_units: "active units (Burda)", MetricName.axis_alignment: "axis alignment",
            MetricName.final_probe_means: "probe accuracy: means",
            MetricName.final_probe_means_variances: "probe accuracy: means + variances",
            MetricName.final_probe_samples: "probe accuracy: sampled latents",
            MetricName.final_probe_pixels: "probe accuracy: binarised pixels (baseline)"}


def summary_html(config: SweepConfig, summary: pd.DataFrame) -> str:
    """One table per k (rows = metrics, columns = alpha, cells 'mean ± std (n)'): a few hundred pixels wide
    for the paper's 8 alphas, where one row per (alpha, k) with a column per statistic is thousands."""
    table = pivot_summary(summary).rename(index=metric_labels(config))
    if table.empty:
        return "<p>no finished trial with a metric yet</p>"
    blocks = []
    for k in table.columns.unique(level="k"):
        part = table[k].rename(columns=lambda a: f"alpha = {a:g}")
        blocks.append(f"<h3>k = {k}</h3>" + part.to_html(index_names=False, na_rep="-", classes="summary"))
    return "\n".join(blocks)


def caption_html(stem: str, caption: Caption) -> str:
    return (f"<figcaption><p>{html.escape(caption.shows)} <small>({stem})</small></p>"
            f"<p><b>Claim tested:</b> {html.escape(caption.claim)}</p>"
            f"<p><b>This sweep:</b> {html.escape(caption.verdict)}</p></figcaption>")


def describe_data(config: SweepConfig, data: dict[str, Any]) -> str:
    """'UCI digits (digits): 1497 training and 300 test images of 8x8, labelled; sha256 7ec527b6dfdd...'."""
    if "sha256" not in data:
        return f"{data['title']} ({config.data}; started before vaesweep recorded its data)"
    labels = "labelled" if data["labels"] else "no labels (no probes)"
    return (f"{data['title']} ({data['spec']}): {data['train_images']} training and {data['test_images']} test images "
            f"of {data['side'][0]}x{data['side'][1]}, {labels}; sha256 {data['sha256'][:12]}...")


def verdicts_html(judged: dict[str, Verdict]) -> str:
    """The claims' verdicts as one table, with the tests used and the rule's calibration."""
    rows = "".join(f"<tr><th>{r['claim']}</th><td><b>{r['outcome']}</b></td><td>{html.escape(r['effect'])}</td>"
                   f"<td>{html.escape(r['p_values'])}</td><td>{r['seeds']}</td><td>{r['to_decide']}</td></tr>"
                   for r in verdict_table({claim: verdict.to_dict() for claim, verdict in judged.items()}))
    tests = "".join(f"<li>({claim}) {html.escape(v.test)}</li>" for claim, v in judged.items())
    return (f"<table><tr><th>claim</th><th>outcome</th><th>effect (95% interval)</th><th>p-values</th><th>seeds</th>"
            f"<th>seeds to decide</th></tr>{rows}</table><p>Tests:</p><ul>{tests}</ul>"
            "<p>Each rule errs at most 5% of the time under its claim's null, measured on simulated sweeps "
            "(docs/results.md, \"How a verdict is decided\"). trials.csv and verdicts.json beside this page "
            "let anyone recompute them: <code>vaesweep report --trials trials.csv</code>.</p>")


def render_html(config: SweepConfig, data: dict[str, Any], figures: dict[str, bytes], captions: dict[str, Caption],
                judged: dict[str, Verdict], summary: pd.DataFrame, trials: pd.DataFrame, problems: list[str]) -> str:
    """One self-contained page: figures inlined as base64 PNG with captions, the config, the tables, the problems."""
    images = "\n".join(
        f'<figure><img alt="{stem}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"{caption_html(stem, captions[stem])}</figure>" for stem, png in figures.items())
    problem_list = (f'<ul class="problems">{"".join(f"<li>{html.escape(p)}</li>" for p in problems)}</ul>' if problems
                    else "<ul><li>none</li></ul>")
    columns = [*GRID, "status", MetricName.test_log_likelihood, MetricName.test_vr_bound_alpha, MetricName.active_components,
               MetricName.final_probe_means, "run_id"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>vaesweep report: {html.escape(config.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} img{{max-width:100%}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px}} table.summary td{{text-align:right;white-space:nowrap}} table.summary tbody th{{text-align:left}} .problems li{{color:#a00}}
figure{{margin:1.5em 0}} figcaption{{max-width:1100px;font-size:14px}} figcaption p{{margin:0.3em 0}}</style></head><body>
<h1>Sweep {html.escape(config.name)}</h1>
<p><b>Data:</b> {html.escape(describe_data(config, data))}</p>
<h2>Missing, failed or incomplete</h2>{problem_list}
<h2>The study's claims on this sweep</h2>{verdicts_html(judged)}
<h2>Figures</h2>{images}
<h2>Summary over seeds: mean ± std (number of seeds)</h2>{summary_html(config, summary)}
<h2>Trials</h2>{trials[columns].to_html(index=False, float_format=lambda v: f"{v:.4g}")}
<h2>Configuration</h2><pre>{html.escape(yaml.safe_dump(shareable(config), sort_keys=False))}</pre>
</body></html>"""


def shareable(config: SweepConfig) -> dict:
    """The config as a report shows it: the storage folder by its name, not the machine's path (a report
    is shared); an own data set's file by its name too."""
    shown = config.to_dict()
    shown["storage"] = Path(shown["storage"]).name or shown["storage"]
    kind, sep, path = shown["data"].partition(":")
    if sep and kind in OWN_KINDS:
        shown["data"] = f"{kind}:{Path(path).name}"
    return shown


def write_report(name: str, storage: Path, out: Path, chosen_run: str | None = None,
                 say: Callable[[str], None] = print, margin: float | None = None) -> dict[str, Any]:
    """Build every output of the report into ``out`` (replacing an earlier report only once the new one
    is complete); returns a small summary of what was written. ``say`` gets notes on the way; ``margin``
    overrides the sweep's eval.equivalence_margin."""
    sweep_dir = sweep_path(storage, name)
    tracking = read_tracking(sweep_dir)
    if not tracking or not (sweep_dir / SWEEP_FILE).is_file():
        raise ConfigError(f"no sweep named {name!r} in {storage}; run it first with `vaesweep run`")
    if not tracking.get("parent_run_id"):
        raise ConfigError(f"sweep {name!r} has no MLflow records (MLflow was unavailable when it ran); "
                          f"run `vaesweep sync {name}` first")
    if tracking["tracking_uri"].startswith("sqlite:") and (problem := store_problem(sweep_dir)):
        raise ConfigError(f"sweep {name!r}: {problem}; move it aside and run `vaesweep sync {name}`: it rebuilds the "
                          "runs from Ray's results")
    config = saved_config(sweep_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # the old report stays whole until done
    try:
        def build(store: MlflowClient, connect: Callable[[], MlflowClient]) -> dict[str, Any]:
            for leftover in staging.iterdir():  # a first attempt's files, if the server died under it
                leftover.unlink()
            return build_report(store, connect, config, tracking, staging, chosen_run, margin)

        written = with_sweep_clients(sweep_dir, tracking, build, say)
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"out": str(out), **written}


def replace_folder(new: Path, old: Path) -> None:
    """Put folder ``new`` where ``old`` is, by renames: a reader sees the old folder or the new one."""
    if old.exists():
        previous = old.with_name(f".{old.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        old.rename(previous)
        new.rename(old)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        new.rename(old)


def build_report(store: MlflowClient, connect: Callable[[], MlflowClient], config: SweepConfig,
                 tracking: dict[str, Any], out: Path, chosen_run: str | None, margin: float | None) -> dict[str, Any]:
    """Every output of the report into ``out``, logged under report/ in the parent run; returns counts."""
    with tempfile.TemporaryDirectory() as tmp:
        children = child_runs(store, tracking["experiment_id"], tracking["parent_run_id"])
        client = connect()
        trials, history = run_frames(client, children, HISTORY_KEYS)
        data = read_data_record(config.sweep_dir()) or data_record_of_earlier(spec_title(config.data))
        figures, captions, judged, notes = build_figures(client, config, data, trials, history, chosen_run, Path(tmp),
                                                         margin)
        pngs = {}
        for stem, fig in figures.items():
            fig.savefig(out / f"{stem}.pdf")
            pngs[stem] = figure_png(fig)
            (out / f"{stem}.png").write_bytes(pngs[stem])
            plt.close(fig)
        summary = summarize(trials)
        summary.to_csv(out / "summary.csv", index=False)
        write_verdict_record(trials, judged, out)
        finished = set(trials.loc[trials["status"] == "FINISHED", "run_id"])
        runs = {run_name_of(r): r for r in trials.itertuples()}
        expected = expected_points(config)
        planned = set(expected)
        problems = [f"{p}: no finished run " + (f"(run {run_state(runs[p])})" if p in runs else "(not started)")
                    for p in expected if p not in runs or runs[p].status != "FINISHED"]
        problems += [f"{name}: run {run_state(r)}" for name, r in runs.items()
                     if r.status != "FINISHED" and name not in planned]
        metrics = FINAL_METRICS if data["labels"] else UNLABELLED_FINAL_METRICS
        problems += [f"missing metric in {line}" for line in missing_metrics(trials, metrics)]
        problems += stopped_early(trials) + notes
        (out / "report.html").write_text(render_html(config, data, pngs, captions, judged, summary, trials, problems))
        client.log_artifacts(tracking["parent_run_id"], str(out), REPORT_DIR)
    return {"grid_points": len(trials), "finished": len(finished), "problems": problems, "figures": len(pngs),
            "verdicts": judged}


def run_state(row) -> str:
    """A run's status, with its error when it failed: 'FAILED: NonFiniteLossError: ...'."""
    error = getattr(row, "error", "")
    return f"{row.status}: {error}" if isinstance(error, str) and error else row.status


def run_name_of(row) -> str:
    return grid_point_label(row.alpha, row.k, row.seed)
