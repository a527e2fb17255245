"""How far apart two training checkpoints are, as relative deviations.

Used to check that N-rank training computes what one process computes. Two runs of the
same steps differ by float summation order (rank shares, thread counts, the CPU's
kernels: AVX-512 vs AVX2), and Adam-style optimisers turn a gradient entry near zero into
an update of up to ``lr`` whatever its size, so runs drift apart a little more every step.
A first step is comparable tightly; longer runs only within a measured bound.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file


@dataclass(frozen=True)
class Deviation:
    """Largest relative deviations between checkpoint ``b`` and reference ``a``."""

    loss: float  # |b - a| / |a| of the per-epoch mean training loss, worst epoch up to this one
    weights: float  # ||b - a|| / ||a|| of a parameter tensor, worst tensor
    table_state: float  # the embedding tables' Adagrad sums of squared gradients, worst table
    dense_state: float  # AdamW's first moment of the dense parameters, worst tensor
    worst: dict[str, str]  # which tensor gave each of the figures above

    def as_dict(self) -> dict[str, float]:
        return {"loss": self.loss, "weights": self.weights, "table_state": self.table_state, "dense_state": self.dense_state}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """||b - a|| / ||a|| (0 when both are zero)."""
    a, b = a.double(), b.double()
    norm = float(a.norm())
    diff = float((b - a).norm())
    return diff / norm if norm > 0 else diff


def _worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> tuple[float, str]:
    if sorted(a) != sorted(b):
        raise ValueError(f"{what}: the checkpoints hold different tensors: {sorted(set(a) ^ set(b))}")
    scores = {k: relative(a[k], b[k]) for k in a}
    key = max(scores, key=scores.get, default="")
    return scores.get(key, 0.0), key


def _dense_first_moments(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)["state"]
    return {str(i): s["exp_avg"] for i, s in state.items()}


def losses(ckpt: Path) -> list[float]:
    return [h["loss"] for h in json.loads((Path(ckpt) / "state.json").read_text())["history"]]


def checkpoint_deviation(a: Path, b: Path, epoch: int) -> Deviation:
    """Compare two distributed-training checkpoint folders at ``epoch`` (0-based)."""
    a, b = Path(a), Path(b)
    la, lb = losses(a)[: epoch + 1], losses(b)[: epoch + 1]
    if len(la) != epoch + 1 or len(lb) != epoch + 1:
        raise ValueError(f"{a} has {len(losses(a))} epochs, {b} has {len(losses(b))}; epoch {epoch} asked for")
    loss = max(abs(y - x) / abs(x) for x, y in zip(la, lb, strict=True))
    stem = f"epoch-{epoch:03d}"
    weights, w_key = _worst(load_file(str(a / f"{stem}.safetensors")), load_file(str(b / f"{stem}.safetensors")), "weights")
    tables, t_key = _worst(load_file(str(a / f"{stem}.sparse-optim.safetensors")), load_file(str(b / f"{stem}.sparse-optim.safetensors")), "table state")
    dense, d_key = _worst(_dense_first_moments(a / f"{stem}.optim.pt"), _dense_first_moments(b / f"{stem}.optim.pt"), "dense state")
    return Deviation(loss, weights, tables, dense, {"weights": w_key, "table_state": t_key, "dense_state": f"param {d_key}"})
