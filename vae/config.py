"""The trainer's configuration: one validated object per trial, defaults from the study.

Defaults follow paper.md section 2 and science.md: 2x200 ReLU MLPs, Adam at 1e-3, batch 100,
K = 5 training samples, dynamic binarisation. ``extra="forbid"`` makes a typo name its field.
"""

from __future__ import annotations

import math
from typing import Literal

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from vae.data_spec import SPEC_HELP, builtin_sizes, normalized_spec, spec_title

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed
# A data set's name or own path, checked and made absolute (vae/data_spec.py): a trial's and a sweep's field.
DataSpec = Annotated[str, AfterValidator(normalized_spec)]


# Settings that say how a model is computed, not which model it is: a checkpoint resumes under others.
def grid_point_label(alpha: float, k: int, seed: int) -> str:
    """A grid point's name everywhere (MLflow run name, a pack member's folder, status rows, reports):
    a0.5_k30_s1. Defined here, at the lowest layer, because every layer names grid points."""
    return f"a{alpha:g}_k{k}_s{seed}"


RESUMABLE_CHANGES = frozenset({"epochs", "device", "bf16_output_layer", "matmul_precision", "cuda_graphs"})


class TrainConfig(BaseModel):
    """Everything that determines a trained model (where MNIST's files are aside)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: DataSpec = Field("mnist", description=f"data set: {SPEC_HELP}")
    alpha: float = Field(1.0, description="Rényi alpha: 1 = ELBO, 0 = IWAE, -inf = VR-max")
    k: int = Field(30, gt=0, description="latent dimension")
    hidden: tuple[int, ...] = Field((200, 200), min_length=1, description="hidden widths of each MLP")
    activation: Literal["relu", "tanh", "softplus"] = Field("relu", description="hidden activation")
    epochs: int = Field(1000, gt=0, description="training epochs")
    batch_size: int = Field(100, gt=0, description="images per step")
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False, description="Adam learning rate")
    train_samples: int = Field(5, gt=0, description="K, importance samples per image in training")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seeds every source of randomness of the trial")
    binarization: Literal["dynamic", "static", "none"] = Field(
        "dynamic", description="dynamic: fresh Bernoulli draw per use; static: one per seed; none: grey levels"
    )
    train_subset: int | None = Field(None, gt=0, description="first N training images only")
    validation_images: int = Field(
        0, ge=0, description="the last N training images held out as a validation set (0: train on all, no val_* metrics)"
    )
    test_subset: int | None = Field(None, gt=0, description="first N test images only")
    device: str = Field("auto", description="auto (cuda when present), cpu, cuda, cuda:N")
    bf16_output_layer: bool = Field(
        False, description="CPU training only: the decoder output layer's products (two thirds of a step's FLOPs) take "
        "bf16 inputs with float32 accumulation (oneDNN; AMX/AVX-512 BF16); evaluation stays float32"
    )

    matmul_precision: Literal["highest", "high"] = Field(
        "highest", description="CUDA training only: highest = float32 matrix products; high = TF32 products "
        "(not validated: its effect on the log-likelihood, against highest, is not measured; docs/benchmarks.md); "
        "evaluation stays float32; on CPU it changes nothing"
    )

    cuda_graphs: Literal["auto", "off"] = Field(
        "auto", description="CUDA training only: auto = the packed step captured as CUDA graphs and replayed (a "
        "capture that fails falls back to eager steps, said in the trial's step_mode); off = eager steps")

    @field_validator("cuda_graphs", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML reads a bare ``off`` as false (``--set train.cuda_graphs=off``, ``cuda_graphs: off``)."""
        return "off" if value is False else value

    @field_validator("alpha")
    @classmethod
    def _alpha_not_nan(cls, alpha: float) -> float:
        if math.isnan(alpha):
            raise ValueError("alpha must be a number or +-inf, not NaN")
        return alpha

    @model_validator(mode="after")
    def _fits_the_data(self) -> "TrainConfig":
        """Checked against a built-in set's sizes here, so a sweep is refused before launch rather than each
        trial at its start; a user's own files are checked (``data_problem``) once they are read."""
        if problem := self.data_problem(*builtin_sizes(self.data)):
            raise ValueError(problem)
        return self

    def data_problem(self, train_images: int | None, test_images: int | None) -> str | None:
        """What this config asks of a data set of these split sizes that it does not have (None: nothing;
        an unknown size is not checked)."""
        for field, available in (("train_subset", train_images), ("test_subset", test_images)):
            if available is not None and (getattr(self, field) or 0) > available:
                return (f"{field}={getattr(self, field)} is more than {spec_title(self.data)}'s {available} images of "
                        f"that split: set {field} to at most {available} (or leave it empty for all)")
        training = self.train_subset or train_images
        if training is not None and self.validation_images >= training:
            return (f"validation_images={self.validation_images} leaves no training images of {training} "
                    f"(train_subset={self.train_subset}): hold out fewer than {training} or raise train_subset")
        return None

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, hidden: tuple[int, ...]) -> tuple[int, ...]:
        if any(width <= 0 for width in hidden):
            raise ValueError("every hidden width must be positive")
        return hidden
