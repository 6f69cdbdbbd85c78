"""Grid-agnostic fast field parametrisations: multi-resolution feature grids (Instant-NGP style,
dense instead of hashed: a 37³ volume fits densely) decoded by a small MLP.

A `FeatureGrid` maps normalised coordinates (P, ndim) in [-1, 1] over the FOV (image axis
order, the convention of `Grid.normalized_coords`) to (P,) values, like `Siren`: it can be
sampled at any point and so on any grid. Each level is a dense grid of `features` channels
whose cells tile the FOV (`align_corners=False`: -1 and +1 are the FOV's outer edges); values
between cell centres are multilinear interpolations (`torch.nn.functional.grid_sample`), so the
field is continuous and its resolution is not tied to the training grid. Level resolutions
grow geometrically from `min_res` to `max_scale` times the training grid, per axis.

Why it is fast: a forward pass costs `levels` interpolations and a width-`hidden` MLP per point,
instead of `depth` width² matrix products of a SIREN; on a 37³ volume one training step is
22x cheaper on a CPU (0.082 s vs 1.80 s, benchmarks/scanner3d.py).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NirmpiError

__all__ = ["FeatureGrid", "level_shapes", "grid_state_shapes", "grid_parameter_count"]


def level_shapes(shape: Sequence[int], levels: int, min_res: int, max_scale: float) -> list[tuple[int, ...]]:
    """Per-level grid shapes (image order): geometric from `min_res` cells (along the longest axis,
    the others in proportion) to `max_scale` x `shape`."""
    shape = tuple(int(n) for n in shape)
    top = max(shape)
    out = []
    for level in range(levels):
        t = level / max(1, levels - 1)
        f = (min_res / top) ** (1 - t) * max_scale ** t       # fraction of the training grid
        out.append(tuple(max(2, int(math.ceil(n * f))) for n in shape))
    return out


def grid_state_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes of `FeatureGrid(**cfg)`, computed without building it."""
    shape = tuple(int(n) for n in cfg["shape"])
    levels, features = int(cfg.get("levels", 6)), int(cfg.get("features", 4))
    hidden, depth = int(cfg.get("hidden", 32)), int(cfg.get("depth", 1))
    out: dict[str, tuple[int, ...]] = {}
    for i, shp in enumerate(level_shapes(shape, levels, int(cfg.get("min_res", 4)), float(cfg.get("max_scale", 1.0)))):
        out[f"grids.{i}"] = (1, features, *shp)
    width = levels * features
    for k in range(depth):
        out[f"mlp.{2 * k}.weight"], out[f"mlp.{2 * k}.bias"] = (hidden, width), (hidden,)
        width = hidden
    out[f"mlp.{2 * depth}.weight"], out[f"mlp.{2 * depth}.bias"] = (1, width), (1,)
    return out


def grid_parameter_count(cfg: dict) -> int:
    return sum(math.prod(s) for s in grid_state_shapes(cfg).values())


class FeatureGrid(nn.Module):
    """Multi-resolution dense feature grids + small MLP decoder.

    in_dim: 2 or 3. shape: the training grid's shape (image order) that sets the level shapes.
    levels, features: grids and channels per grid; min_res, max_scale: coarsest cells along the
    longest axis, finest level relative to `shape`. hidden, depth: decoder width and hidden
    layers (depth 0: a linear read-out of the features). positive: None | "square" |
    "softplus" as in `Siren`. init_std: feature initialisation (small: the field starts flat).
    """

    def __init__(self, in_dim: int = 3, shape: Sequence[int] = (37, 37, 37), levels: int = 6,
                 features: int = 4, min_res: int = 4, max_scale: float = 1.0, hidden: int = 32,
                 depth: int = 1, positive: str | None = "square", output_bias: float = 0.3,
                 init_std: float = 1e-2, seed: int | None = 0):
        super().__init__()
        if in_dim not in (2, 3) or len(tuple(shape)) != in_dim:
            raise NirmpiError(f"FeatureGrid: in_dim must be 2 or 3 and match shape, got {in_dim}, {tuple(shape)}")
        if levels < 1 or features < 1 or hidden < 1 or depth < 0 or min_res < 2 or not max_scale > 0:
            raise NirmpiError("FeatureGrid: levels, features, hidden >= 1, depth >= 0, min_res >= 2, max_scale > 0")
        if positive not in (None, "square", "softplus", "relu"):
            raise NirmpiError(f"FeatureGrid: positive must be None, 'square', 'softplus' or 'relu', got {positive!r}")
        self.in_dim, self.shape = int(in_dim), tuple(int(n) for n in shape)
        self.levels, self.features, self.min_res, self.max_scale = int(levels), int(features), int(min_res), float(max_scale)
        self.hidden, self.depth, self.positive = int(hidden), int(depth), positive
        self.output_bias, self.init_std = float(output_bias), float(init_std)
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        self.grids = nn.ParameterList()
        for shp in level_shapes(self.shape, self.levels, self.min_res, self.max_scale):
            g = torch.randn((1, self.features, *shp), generator=gen) * self.init_std
            self.grids.append(nn.Parameter(g))
        layers: list[nn.Module] = []
        width = self.levels * self.features
        for _ in range(self.depth):
            lin = nn.Linear(width, self.hidden)
            _init_linear(lin, gen)
            layers += [lin, nn.ReLU()]
            width = self.hidden
        out = nn.Linear(width, 1)
        _init_linear(out, gen)
        with torch.no_grad():
            out.bias.fill_(self.output_bias)
        layers.append(out)
        self.mlp = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(P, ndim) image-order coordinates -> (P, levels * features) interpolated features."""
        P = x.shape[0]
        # grid_sample wants the last coordinate axis in (x, y[, z]) order: reverse image order
        g = x.flip(-1).reshape(1, P, *([1] * (self.in_dim - 1)), self.in_dim)
        feats = [F.grid_sample(grid, g, mode="bilinear", padding_mode="border", align_corners=False)
                 .reshape(self.features, P) for grid in self.grids]
        return torch.cat(feats, 0).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.encode(x)).squeeze(-1)
        if self.positive == "square":
            return y * y
        if self.positive == "softplus":
            return F.softplus(y)
        if self.positive == "relu":
            return F.relu(y)
        return y

    def param_groups(self, lr: float, eps: float = 1e-15) -> list[dict]:
        """Adam groups: grids at lr, the decoder at lr / 10 (a decoder at the grids' rate
        oscillates)."""
        return [{"params": list(self.grids), "lr": lr, "eps": eps},
                {"params": list(self.mlp.parameters()), "lr": lr / 10, "eps": eps}]

    def tv(self) -> torch.Tensor:
        """Mean absolute difference of neighbouring cells over all levels and axes (smoothness
        prior on the features; weighted by the loop's tv_weight)."""
        total = 0.0
        for g in self.grids:
            for d in range(2, g.ndim):
                total = total + g.diff(dim=d).abs().mean()
        return total / len(self.grids)

    def config(self) -> dict:
        return {"network": "grid", "in_dim": self.in_dim, "shape": list(self.shape), "levels": self.levels,
                "features": self.features, "min_res": self.min_res, "max_scale": self.max_scale,
                "hidden": self.hidden, "depth": self.depth, "positive": self.positive,
                "output_bias": self.output_bias, "init_std": self.init_std}


def _init_linear(lin: nn.Linear, gen) -> None:
    bound = math.sqrt(6.0 / lin.in_features) / 2
    with torch.no_grad():
        lin.weight.uniform_(-bound, bound, generator=gen)
        lin.bias.zero_()
