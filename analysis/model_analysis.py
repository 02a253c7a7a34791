"""Everything the study measures on one trained model, written to a directory.

Used by ``vaesweep analyze CHECKPOINT`` and at the end of every sweep trial. Writes
``analysis.json`` (spectrum, active components and units, axis alignment, probe accuracies),
``spectrum.csv``, ``probes.csv``, ``interpolations.png`` (+ ``.npy``) and ``fig4_geodesics.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from analysis.figures import geodesic_figure
from analysis.geodesics import fisher_rao_distance_1d
from analysis.interpolate import interpolation_rows, save_interpolation_grid
from analysis.latent import encode_dataset
from analysis.metrics import ANALYSIS_FILE
from analysis.probes import member_probes
from analysis.settings import EvalConfig
from analysis.spectrum import spectrum
from vae.member import Member


def analyze_member(member: Member, out: Path, evaluation: EvalConfig = EvalConfig()) -> dict[str, Any]:
    """Measure ``member.model`` and write the artifacts into ``out``; returns the analysis dict."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    test = encode_dataset(member.model, member.test_x, seed=evaluation.seed)
    spec = spectrum(test.means, evaluation.epsilon)
    # a data set without labels has no probes (and says so: probe_accuracy is empty)
    probes = member_probes(member, evaluation.probe_train_size, evaluation.seed, pixels=True) if member.labelled else {}

    first, second = evaluation.pair
    rows = interpolation_rows(member.model, member.test_x[first], member.test_x[second], member.images.side,
                              evaluation.interpolation_steps, evaluation.seed)
    save_interpolation_grid(rows, out / "interpolations.png")
    np.save(out / "interpolations.npy", rows)

    # Figure 4 from this model: the coordinates where the two posteriors are furthest apart.
    mu, sigma = test.means[[first, second]], np.sqrt(test.variances[[first, second]])
    far = np.argsort(fisher_rao_distance_1d(mu[0], sigma[0], mu[1], sigma[1]))[::-1][: evaluation.geodesic_curves]
    figure = geodesic_figure(mu[0, far], sigma[0, far], mu[1, far], sigma[1, far])
    figure.savefig(out / "fig4_geodesics.png", dpi=120)
    plt.close(figure)

    result = {
        **spec.as_dict(),
        "probe_accuracy": probes,
        "probe_train_size": evaluation.probe_train_size,
        "interpolation_pair": [first, second],
        "interpolation_labels": [int(member.test_y[first]), int(member.test_y[second])] if member.labelled else None,
        "geodesic_coordinates": far.tolist(),
        "epoch": member.epoch,
        "seconds": time.perf_counter() - start,
    }
    (out / ANALYSIS_FILE).write_text(json.dumps(result, indent=2))
    unit_variance = test.means.var(axis=0, ddof=1)
    pd.DataFrame({
        "component": np.arange(1, len(spec.eigenvalues) + 1),
        "eigenvalue": spec.eigenvalues,
        "unit_variance_sorted": np.sort(unit_variance)[::-1],
    }).to_csv(out / "spectrum.csv", index=False)
    pd.DataFrame({"features": list(probes), "accuracy": list(probes.values())}).to_csv(out / "probes.csv", index=False)
    return result
