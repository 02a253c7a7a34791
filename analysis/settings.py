"""What a trial measures, stated once: the sweep's ``eval`` section, ``vaesweep train`` and ``analyze``.

epsilon = 0.01 is the eigenvalue above which a PCA component of the posterior means "carries
information" (paper.md 2.1); the probe epochs sample the training curve of Figure 3 (paper.md 2.2);
10 samples for the test bound and 2000 for the IS log-likelihood are the study's (science.md).
Light on purpose (pydantic only, no NumPy or scikit-learn): the CLI imports it to build its flags.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

EPSILON = 0.01
PROBE_EPOCHS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
EQUIVALENCE_MARGIN = 1.0  # components: a count's own resolution (analysis/claims.py)


class EvalConfig(BaseModel):
    """Evaluation and analysis settings of one trial (every default here and nowhere else)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bound_samples: int = Field(10, gt=0, description="samples of the test VR bound")
    is_samples: int = Field(2000, gt=0, description="samples of the IS log-likelihood")
    probe_epochs: tuple[int, ...] = Field(PROBE_EPOCHS, description="epochs after which the linear probes run")
    probe_train_size: int = Field(10000, gt=0, description="training images the probes are fit on")
    epsilon: float = Field(EPSILON, gt=0, allow_inf_nan=False, description="eigenvalue threshold of an active component")
    val_images: int = Field(1000, gt=0, description="validation images of the per-epoch selection bound")
    interpolation_steps: int = Field(10, gt=1, description="steps of each latent interpolation")
    pair: tuple[int, int] = Field((0, 1), description="test images interpolated between (Figure 5)")
    geodesic_curves: int = Field(4, gt=0, description="coordinates drawn in the geodesic figure")
    seed: int = Field(0, ge=0, description="seed of the sampled latents of the analysis")
    equivalence_margin: float = Field(EQUIVALENCE_MARGIN, gt=0, allow_inf_nan=False,
                                      description="active components within which the report calls latent sizes "
                                                  "equivalent (claims a and b)")
