"""Learned fusion: a small network, trained from interactions, that places items by behaviour.

Content encoders say what an item *is*; interactions say what it is *used with*. The
network maps an item's modality embeddings into the common space so that items users
engage with one after the other land close together (an InfoNCE objective over
co-engaged pairs, other items of the batch as negatives). A brand-new item with no
interactions then lands where items whose content resembles it are engaged with: the
content-to-behaviour regression used for cold start.

It starts as exactly ``AverageFusion`` (projections initialised to the fixed ones, equal
modality gates), is pulled towards that start by weight decay so a few pairs cannot
wreck it, and every ``fit`` makes a new version that is saved with ``save`` and loaded
with ``torch.load(weights_only=True)``: a file can hold tensors and numbers, never code.
``save`` writes a temporary file, fsyncs it and renames it into place, so a crash leaves
the former weights or the new ones, never half a file; ``load`` takes only weights of
this network's names and shapes, finite and within ``MAX_WEIGHT``, and raises
``FusionWeightsError`` for anything else, before it changes the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from encoders.fusion import Embeddings, Fusion, ModalityProjection, unit
from models.atomic_file import read_failure, write_atomically

#: The largest weight a saved fusion may hold. Fitting keeps them near their start (an
#: identity or a Gaussian projection, and zero gates); a larger one is no fitted model, and
#: could overflow a fused vector to infinity, which ``unit`` would make a zero vector.
MAX_WEIGHT = 1e4
#: The most versions a saved fusion may claim (one a refit: decades of refits a second).
MAX_FITTED_VERSIONS = 10**12


class FusionWeightsError(ValueError):
    """A saved fusion that cannot be read, or is not weights of this network."""


class _FusionNetwork(nn.Module):
    def __init__(self, projection: ModalityProjection) -> None:
        super().__init__()
        self.modalities = sorted(projection.dims)
        self.projections = nn.ModuleDict()
        for modality in self.modalities:
            dim = projection.dims[modality]
            layer = nn.Linear(dim, projection.common_dim, bias=False)
            matrix = projection.matrices[modality]
            initial = np.eye(dim, dtype=np.float32) if matrix is None else matrix
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(initial.T.copy()))
            self.projections[modality] = layer
        self.gates = nn.Parameter(torch.zeros(len(self.modalities)))

    def forward(self, inputs: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """``inputs[m]``: (n, dim_m) centred embeddings, zero where absent; ``present``: (n, M)."""
        gates = torch.softmax(self.gates, dim=0) * present
        fused = 0
        for index, modality in enumerate(self.modalities):
            projected = nn.functional.normalize(self.projections[modality](inputs[modality]), dim=1)
            fused = fused + gates[:, index : index + 1] * projected
        return nn.functional.normalize(fused, dim=1)


class LearnedFusion(Fusion):
    """Fusion whose projections and modality gates are fitted to co-engaged item pairs.

    >>> rng = np.random.default_rng(0)
    >>> fusion = LearnedFusion(ModalityProjection({"text": 4, "image": 6}, common_dim=4))
    >>> items = [{"text": rng.normal(size=4), "image": rng.normal(size=6)} for _ in range(20)]
    >>> fusion.version, fusion.fuse(items[:2]).shape
    ('learned-v0', (2, 4))
    >>> fusion.fit(items, [(i, i + 1) for i in range(0, 20, 2)], epochs=2)["pairs"]
    10
    >>> fusion.version
    'learned-v1'
    """

    name = "learned"

    def __init__(
        self,
        projection: ModalityProjection,
        learning_rate: float = 3e-3,
        temperature: float = 0.1,
        weight_decay: float = 1e-3,
        seed: int = 0,
    ) -> None:
        super().__init__(projection)
        self.learning_rate = learning_rate
        self.temperature = temperature
        self.weight_decay = weight_decay
        self.seed = seed
        self.network = _FusionNetwork(projection)
        self._initial = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
        self.fitted_versions = 0

    @property
    def version(self) -> str:
        return f"learned-v{self.fitted_versions}"

    def _tensors(self, items: Sequence[Embeddings]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        present = torch.zeros(len(items), len(self.network.modalities))
        inputs = {}
        for index, modality in enumerate(self.network.modalities):
            rows = np.zeros((len(items), self.projection.dims[modality]), dtype=np.float32)
            for row, embeddings in enumerate(items):
                if modality in embeddings:
                    rows[row] = self.projection.centred(modality, embeddings[modality])
                    present[row, index] = 1.0
            inputs[modality] = torch.from_numpy(rows)
        if (present.sum(dim=1) == 0).any():
            raise ValueError("an item needs at least one modality embedding to be fused")
        return inputs, present

    def fuse(self, items: Sequence[Embeddings]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        inputs, present = self._tensors(items)
        with torch.inference_mode():
            return unit(self.network(inputs, present).numpy().astype(np.float32))

    def fit(
        self,
        items: Sequence[Embeddings],
        pairs: Sequence[tuple[int, int]],
        epochs: int = 20,
        batch_size: int = 256,
    ) -> dict[str, float]:
        """Train on co-engaged pairs (indexes into ``items``); returns loss before and after.

        Each call continues from the current weights and makes a new version.
        """
        if not pairs:
            raise ValueError("fit needs at least one co-engaged pair")
        inputs, present = self._tensors(items)
        pair_index = torch.tensor(pairs, dtype=torch.long)
        generator = torch.Generator().manual_seed(self.seed + self.fitted_versions)
        optimiser = torch.optim.Adam(self.network.parameters(), lr=self.learning_rate)
        before = self._loss(inputs, present, pair_index).item()
        self.network.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(pair_index), generator=generator).split(batch_size):
                optimiser.zero_grad()
                loss = self._loss(inputs, present, pair_index[batch]) + self._drift()
                loss.backward()
                optimiser.step()
        self.network.eval()
        self.fitted_versions += 1
        after = self._loss(inputs, present, pair_index).item()
        return {"pairs": len(pairs), "loss_before": before, "loss_after": after}

    def _loss(
        self, inputs: dict[str, torch.Tensor], present: torch.Tensor, pairs: torch.Tensor
    ) -> torch.Tensor:
        """Symmetric InfoNCE: each item should pick its partner among the batch's partners."""
        left = self.network({m: x[pairs[:, 0]] for m, x in inputs.items()}, present[pairs[:, 0]])
        right = self.network({m: x[pairs[:, 1]] for m, x in inputs.items()}, present[pairs[:, 1]])
        logits = left @ right.T / self.temperature
        targets = torch.arange(len(pairs))
        return (
            nn.functional.cross_entropy(logits, targets)
            + nn.functional.cross_entropy(logits.T, targets)
        ) / 2

    def _drift(self) -> torch.Tensor:
        """Weight decay towards the initial (average-fusion) weights, not towards zero."""
        return self.weight_decay * sum(
            ((parameter - self._initial[name]) ** 2).sum()
            for name, parameter in self.network.state_dict(keep_vars=True).items()
        )

    def save(self, path: str | Path) -> None:
        """Write the weights to ``path`` atomically (a temporary file, fsynced, renamed)."""
        path = Path(path)
        state = {name: t.detach().clone() for name, t in self.network.state_dict().items()}
        saved = {"weights": state, "fitted_versions": self.fitted_versions}
        write_atomically(path, lambda handle: torch.save(saved, handle))

    def load(self, path: str | Path) -> None:
        """Take the weights saved at ``path``; ``FusionWeightsError``, the model unchanged,
        if the file cannot be read or holds anything but this network's finite weights."""
        path = Path(path)
        expected = self.network.state_dict()
        try:
            # 4 bytes a weight, twice over and a megabyte for the archive's own records.
            limit = 8 * sum(t.numel() for t in expected.values()) + 2**20
            if path.stat().st_size > limit:
                raise FusionWeightsError(f"{path.stat().st_size:,} bytes, over {limit:,}")
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except FusionWeightsError as error:
            raise FusionWeightsError(f"unreadable fusion weights {path}: {error}") from None
        except Exception as error:  # whatever a damaged archive or pickle raises
            raise FusionWeightsError(
                f"unreadable fusion weights {path}: {read_failure(error)}"
            ) from None
        weights, versions = _checked(path, saved, expected)
        self.network.load_state_dict(weights)
        self.fitted_versions = versions


def _checked(
    path: Path, saved: Any, expected: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], int]:
    """The weights and version count ``saved`` at ``path`` if they fit ``expected``."""

    def refuse(why: str) -> FusionWeightsError:
        return FusionWeightsError(f"{path} holds no weights of this fusion: {why}")

    if not isinstance(saved, dict) or set(saved) != {"weights", "fitted_versions"}:
        keys = sorted(map(str, saved)) if isinstance(saved, dict) else type(saved).__name__
        raise refuse(f"holds {str(keys)[:200]}, not weights and fitted_versions")
    weights, versions = saved["weights"], saved["fitted_versions"]
    if type(versions) is not int or not 0 <= versions <= MAX_FITTED_VERSIONS:
        raise refuse(f"fitted_versions is {str(versions)[:50]}, not 0 to {MAX_FITTED_VERSIONS}")
    if not isinstance(weights, dict) or set(weights) != set(expected):
        names = sorted(map(str, weights)) if isinstance(weights, dict) else type(weights)
        raise refuse(f"weights {str(names)[:200]}, not {sorted(expected)} (other encoders?)")
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
            raise refuse(f"{name} is no dense tensor")
        if tensor.shape != expected[name].shape or not tensor.is_floating_point():
            raise refuse(
                f"{name} is {tensor.dtype} {tuple(tensor.shape)}, not "
                f"{expected[name].dtype} {tuple(expected[name].shape)} (other encoders?)"
            )
        if not bool(torch.isfinite(tensor).all()) or tensor.abs().max() > MAX_WEIGHT:
            raise refuse(f"{name} holds a weight that is not finite or over {MAX_WEIGHT:g}")
    return weights, versions
