"""``vaesweep report``: the study's figures and tables from a sweep's MLflow runs.

Writes ``fig1_spectrum``, ``fig2_active_components``, ``fig2_bounds``, ``fig3_probes``,
``fig4_geodesics``, ``fig5_interpolations`` (PNG and PDF), ``summary.csv`` (mean / std / count over
seeds per alpha, k and metric) and a self-contained ``report.html``, and logs them under
``report/`` in the sweep's parent run. Works on a partial sweep: grid points without a finished run
and finished runs missing a metric are listed, not fatal.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib import pyplot as plt
from mlflow.tracking import MlflowClient

from analysis.aggregate import missing_metrics, summarize, trial_label, with_grid
from analysis.figures import (PROBE_PANELS, active_components_figure, bounds_figure, geodesic_figure,
                              interpolation_figure, probes_figure, spectrum_figure)
from sweeps.config import ConfigError, SweepConfig
from sweeps.layout import SWEEP_FILE, read_tracking, saved_config
from sweeps.mlflow_server import LocalMlflowServer
from sweeps.runs import load_runs
from sweeps.tracking import EIGENVALUE_KEY
from sweeps.trainable import run_name

# Figure 4 is geometry, not data: pairs of univariate Gaussians like the study's (mu1, s1, mu2, s2).
GEODESIC_PAIRS = np.array([[-2.0, 0.5, 2.0, 0.5], [-1.0, 0.2, 1.5, 1.0], [0.0, 0.3, 0.5, 2.0], [-2.5, 1.0, 1.0, 0.1]])


@contextlib.contextmanager
def sweep_client(sweep_dir: Path, tracking: dict[str, Any]) -> Iterator[MlflowClient]:
    """A client that can read runs and read/write artifacts: the sweep's server for an embedded store."""
    if tracking["tracking_uri"].startswith("sqlite:"):
        with LocalMlflowServer(sweep_dir) as server:
            yield MlflowClient(server.wait())
    else:
        yield MlflowClient(tracking["tracking_uri"])


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def expected_points(config: SweepConfig) -> list[str]:
    return [run_name(t) for t in config.trials()] if config.search == "grid" else []


def build_figures(client: MlflowClient, config: SweepConfig, trials: pd.DataFrame, history: pd.DataFrame,
                  chosen: str | None, workdir: Path) -> tuple[dict[str, Any], list[str]]:
    """The six figures by file stem, and notes on what could not be drawn."""
    notes = []
    summary = summarize(trials)
    finished = trials[trials["status"] == "FINISHED"]
    spectra = with_grid(history[history["key"] == EIGENVALUE_KEY], trials)
    probes = with_grid(history[history["key"].isin(list(PROBE_PANELS))], trials)
    if (probes["alpha"] == 1.0).any():  # the study's Figure 3 is the KL (alpha = 1) VAE
        probes = probes[probes["alpha"] == 1.0]
    pixels = finished["final_probe_pixels"].dropna()
    figures = {
        "fig1_spectrum": spectrum_figure(spectra, config.eval.epsilon),
        "fig2_active_components": active_components_figure(summary),
        "fig2_bounds": bounds_figure(summary),
        "fig3_probes": probes_figure(probes, float(pixels.mean()) if len(pixels) else None),
        "fig4_geodesics": geodesic_figure(*GEODESIC_PAIRS.T),
    }
    ranked = finished.dropna(subset=["test_log_likelihood"]).sort_values("test_log_likelihood", ascending=False)
    run_id = chosen or (ranked["run_id"].iloc[0] if len(ranked) else None)
    if run_id is None:
        notes.append("Figure 5: no finished trial with a test log-likelihood yet")
        return figures, notes
    try:
        local = client.download_artifacts(run_id, "analysis/interpolations.npy", str(workdir))
    except Exception as err:  # noqa: BLE001 - a missing artifact is reported, not fatal
        notes.append(f"Figure 5: run {run_id} has no interpolations artifact ({str(err).splitlines()[0][:120]})")
        return figures, notes
    row = trials[trials["run_id"] == run_id].iloc[0]
    title = f"{run_name_of(row)} (run {run_id[:8]}, IS log-lik {row.test_log_likelihood:.2f})"
    figures["fig5_interpolations"] = interpolation_figure(np.load(local), title)
    return figures, notes


def render_html(config: SweepConfig, figures: dict[str, bytes], summary: pd.DataFrame, trials: pd.DataFrame,
                problems: list[str]) -> str:
    """One self-contained page: figures inlined as base64 PNG, the config, the tables, the problems."""
    images = "\n".join(
        f'<figure><img alt="{stem}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{stem}</figcaption></figure>" for stem, png in figures.items())
    wide = summary.pivot_table(index=["alpha", "k"], columns="metric", values=["mean", "std", "count"])
    problem_list = "".join(f"<li>{html.escape(p)}</li>" for p in problems) or "<li>none</li>"
    columns = ["alpha", "k", "seed", "status", "test_log_likelihood", "test_vr_bound_alpha", "active_components",
               "final_probe_means", "run_id"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>vaesweep report: {html.escape(config.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} img{{max-width:100%}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px}} .problems li{{color:#a00}}</style></head><body>
<h1>Sweep {html.escape(config.name)}</h1>
<h2>Missing, failed or incomplete</h2><ul class="problems">{problem_list}</ul>
<h2>Figures</h2>{images}
<h2>Summary over seeds (per alpha, k)</h2>{wide.to_html(float_format=lambda v: f"{v:.4g}")}
<h2>Trials</h2>{trials[columns].to_html(index=False, float_format=lambda v: f"{v:.4g}")}
<h2>Configuration</h2><pre>{html.escape(yaml.safe_dump(config.to_dict(), sort_keys=False))}</pre>
</body></html>"""


def write_report(name: str, storage: Path, out: Path, chosen_run: str | None = None) -> dict[str, Any]:
    """Build every output of the report into ``out``; returns a small summary of what was written."""
    sweep_dir = storage.expanduser().resolve() / name
    tracking = read_tracking(sweep_dir)
    if not tracking or not (sweep_dir / SWEEP_FILE).is_file():
        raise ConfigError(f"no sweep named {name!r} in {storage}; run it first with `vaesweep run`")
    if not tracking.get("parent_run_id"):
        raise ConfigError(f"sweep {name!r} has no MLflow records (MLflow was unavailable when it ran); "
                          f"run `vaesweep sync {name}` first")
    config = saved_config(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    with sweep_client(sweep_dir, tracking) as client, tempfile.TemporaryDirectory() as tmp:
        trials, history = load_runs(client, tracking["experiment_id"], tracking["parent_run_id"])
        figures, notes = build_figures(client, config, trials, history, chosen_run, Path(tmp))
        pngs = {}
        for stem, fig in figures.items():
            fig.savefig(out / f"{stem}.pdf")
            pngs[stem] = figure_png(fig)
            (out / f"{stem}.png").write_bytes(pngs[stem])
            plt.close(fig)
        summary = summarize(trials)
        summary.to_csv(out / "summary.csv", index=False)
        finished = set(trials.loc[trials["status"] == "FINISHED", "run_id"])
        runs = {run_name_of(r): r for r in trials.itertuples()}
        problems = [f"{p}: no finished run " + (f"(run {run_state(runs[p])})" if p in runs else "(not started)")
                    for p in expected_points(config) if p not in runs or runs[p].status != "FINISHED"]
        problems += [f"{name}: run {run_state(r)}" for name, r in runs.items()
                     if r.status != "FINISHED" and name not in expected_points(config)]
        problems += [f"missing metric in {line}" for line in missing_metrics(trials)] + notes
        (out / "report.html").write_text(render_html(config, pngs, summary, trials, problems))
        client.log_artifacts(tracking["parent_run_id"], str(out), "report")
    return {"out": str(out), "trials": len(trials), "finished": len(finished), "problems": problems}


def run_state(row) -> str:
    """A run's status, with its error when it failed: 'FAILED: NonFiniteLossError: ...'."""
    error = getattr(row, "error", "")
    return f"{row.status}: {error}" if isinstance(error, str) and error else row.status


def run_name_of(row) -> str:
    return trial_label(row.alpha, row.k, row.seed)
