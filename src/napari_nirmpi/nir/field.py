"""Coordinate networks (SIREN, Fourier features) and the `Field` that wraps a trained one.

A network maps normalised coordinates p ∈ [-1, 1]^ndim (last axis in image order, voxel centres
of a grid mapped through `Grid.to_normalized`) to one real value per point. `Field` bundles the
network with the training `Grid`, the network/training config and the preprocessing parameters,
so it can be sampled on any grid and saved/loaded (`nir.checkpoint`).

SIREN (Sitzmann et al. 2020), as in the reference code: every hidden unit is sin(ω0·(W x + b));
first layer W ~ U(±1/fan_in), hidden W ~ U(±√(6/fan_in)/ω0_hidden), biases U(±1/√fan_in),
plain linear output initialised with the hidden rule. With `fold=True` (default) ω0 is folded
into the stored W and b (W' = ω0·W, b' = ω0·b, forward sin(W'x + b')): the same function with
fewer element-wise ops. Adam on the folded parameters matches Adam on the unfolded ones when
that layer's lr is multiplied by ω0 and its eps divided by ω0 (`Network.param_groups`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ..errors import NirmpiError
from ..grid import Grid
from .encodings import FeatureGrid, grid_state_shapes, level_shapes

__all__ = ["Siren", "FourierMLP", "Field", "build_network", "check_network_config", "expected_state_shapes",
           "NETWORKS", "FeatureGrid"]


def _uniform(t: torch.Tensor, bound: float, gen: torch.Generator | None) -> None:
    with torch.no_grad():
        t.uniform_(-bound, bound, generator=gen)


class _OutputMixin:
    """Optional non-negative output: concentrations cannot be negative."""

    positive: str | None

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        if self.positive == "softplus":
            return F.softplus(x)
        if self.positive == "relu":
            return torch.relu(x)
        if self.positive in ("square",):
            return x * x
        return x


class Siren(nn.Module, _OutputMixin):
    """SIREN: in_dim → width (sine, ω0) → `depth` × [width → width (sine, hidden ω0)] → 1 linear."""

    kind = "siren"

    def __init__(self, in_dim: int = 2, width: int = 128, depth: int = 3, omega0: float = 30.0,
                 hidden_omega0: float = 30.0, positive: str | None = None, fold: bool = True,
                 output_bias: float = 0.0, seed: int | None = 0):
        super().__init__()
        if in_dim not in (2, 3) or width < 1 or depth < 0:
            raise NirmpiError(f"SIREN needs in_dim 2 or 3, width >= 1, depth >= 0; "
                              f"got in_dim={in_dim}, width={width}, depth={depth}")
        if positive not in (None, "softplus", "relu", "square"):
            raise NirmpiError(f"SIREN positive must be None, 'softplus', 'relu' or 'square', got {positive!r}")
        self.in_dim, self.width, self.depth = int(in_dim), int(width), int(depth)
        self.omega0, self.hidden_omega0 = float(omega0), float(hidden_omega0)
        self.positive, self.fold = positive, bool(fold)
        self.layers = nn.ModuleList([nn.Linear(self.in_dim, self.width)] +
                                    [nn.Linear(self.width, self.width) for _ in range(self.depth)])
        self.out = nn.Linear(self.width, 1)
        gen = torch.Generator().manual_seed(int(seed or 0))  # own generator: global RNG untouched
        for i, lin in enumerate(self.layers):
            fan_in = lin.in_features
            w_bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / self.hidden_omega0
            _uniform(lin.weight, w_bound, gen)
            _uniform(lin.bias, 1.0 / math.sqrt(fan_in), gen)  # PyTorch's default bias range
        _uniform(self.out.weight, math.sqrt(6.0 / self.width) / self.hidden_omega0, gen)
        _uniform(self.out.bias, 1.0 / math.sqrt(self.width), gen)
        with torch.no_grad():
            self.out.bias.add_(float(output_bias))
            if self.fold:
                for lin, w0 in zip(self.layers, self.omegas):
                    lin.weight.mul_(w0)
                    lin.bias.mul_(w0)

    @property
    def omegas(self) -> list[float]:
        return [self.omega0] + [self.hidden_omega0] * self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() and self.fold:  # inference: in-place, fewer allocations
            for lin in self.layers:
                x = torch.addmm(lin.bias, x, lin.weight.T).sin_()
            return self._out(self.out(x)).squeeze(-1)
        for lin, w0 in zip(self.layers, self.omegas):
            x = torch.sin(lin(x)) if self.fold else torch.sin(w0 * lin(x))
        return self._out(self.out(x)).squeeze(-1)

    def unfolded_layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(W, b) of each sine layer in the reference parametrisation sin(ω0 (W x + b))."""
        res = []
        for lin, w0 in zip(self.layers, self.omegas):
            s = 1.0 / w0 if self.fold else 1.0
            res.append((lin.weight.detach() * s, lin.bias.detach() * s))
        return res

    def param_groups(self, lr: float, eps: float = 1e-8) -> list[dict]:
        """Adam groups that make the folded parametrisation optimise exactly like the unfolded one."""
        if not self.fold:
            return [{"params": list(self.parameters()), "lr": lr, "eps": eps, "lr_factor": 1.0}]
        groups = [{"params": list(lin.parameters()), "lr": lr * w0, "eps": eps / w0, "lr_factor": w0}
                  for lin, w0 in zip(self.layers, self.omegas)]
        groups.append({"params": list(self.out.parameters()), "lr": lr, "eps": eps, "lr_factor": 1.0})
        return groups

    def config(self) -> dict:
        return {"network": "siren", "in_dim": self.in_dim, "width": self.width, "depth": self.depth,
                "omega0": self.omega0, "hidden_omega0": self.hidden_omega0,
                "positive": self.positive, "fold": self.fold}


class FourierMLP(nn.Module, _OutputMixin):
    """Gaussian Fourier features γ(p) = [sin 2πBp, cos 2πBp], B ~ N(0, σ²), then a ReLU MLP (Tancik 2020)."""

    kind = "fourier"

    def __init__(self, in_dim: int = 2, width: int = 128, depth: int = 3, num_features: int = 128,
                 sigma: float = 4.0, positive: str | None = None, output_bias: float = 0.0,
                 seed: int | None = 0):
        super().__init__()
        if in_dim not in (2, 3) or width < 1 or depth < 0 or num_features < 1:
            raise NirmpiError(f"Fourier MLP needs in_dim 2 or 3, width/num_features >= 1, depth >= 0; "
                              f"got in_dim={in_dim}, width={width}, depth={depth}, num_features={num_features}")
        self.in_dim, self.width, self.depth = int(in_dim), int(width), int(depth)
        self.num_features, self.sigma, self.positive = int(num_features), float(sigma), positive
        gen = torch.Generator().manual_seed(int(seed or 0))
        self.register_buffer("B", torch.randn(self.num_features, self.in_dim, generator=gen) * self.sigma)
        dims = [2 * self.num_features] + [self.width] * (self.depth + 1)
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.out = nn.Linear(self.width, 1)
        for lin in list(self.layers) + [self.out]:  # Kaiming-uniform as nn.Linear, but seeded
            fan_in = lin.in_features
            _uniform(lin.weight, math.sqrt(6.0 / fan_in) if lin is not self.out else 1 / math.sqrt(fan_in), gen)
            _uniform(lin.bias, 1.0 / math.sqrt(fan_in), gen)
        with torch.no_grad():
            self.out.bias.add_(float(output_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 2 * math.pi * x @ self.B.T
        x = torch.cat([torch.sin(z), torch.cos(z)], dim=-1)
        for lin in self.layers:
            x = torch.relu(lin(x))
        return self._out(self.out(x)).squeeze(-1)

    def param_groups(self, lr: float, eps: float = 1e-8) -> list[dict]:
        return [{"params": list(self.parameters()), "lr": lr, "eps": eps, "lr_factor": 1.0}]

    def config(self) -> dict:
        return {"network": "fourier", "in_dim": self.in_dim, "width": self.width, "depth": self.depth,
                "num_features": self.num_features, "sigma": self.sigma, "positive": self.positive}


NETWORKS = {"siren": Siren, "fourier": FourierMLP, "grid": FeatureGrid}

_KEYS = {"siren": {"network", "in_dim", "width", "depth", "omega0", "hidden_omega0", "positive", "fold", "output_bias"},
         "fourier": {"network", "in_dim", "width", "depth", "num_features", "sigma", "positive", "output_bias"},
         "grid": {"network", "in_dim", "shape", "levels", "features", "min_res", "max_scale", "hidden", "depth",
                  "positive", "output_bias", "init_std"}}


def check_network_config(config) -> dict:
    """Refuse a network config that names an unknown network or sizes outside `config.LIMITS`
    (checked before anything is allocated: a crafted checkpoint cannot make a billion weights).
    Returns a plain copy."""
    from .config import LIMITS, parameter_count

    if not isinstance(config, dict):
        raise NirmpiError(f"network config must be a dict, got {type(config).__name__}")
    cfg = dict(config)
    name = cfg.get("network", "siren")
    if name not in NETWORKS:
        raise NirmpiError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}")
    unknown = set(cfg) - _KEYS[name]
    if unknown:
        raise NirmpiError(f"network config for {name!r}: unknown settings {sorted(unknown)}")

    def integer(key, lo, hi, default):
        v = cfg.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise NirmpiError(f"network config {key}={v!r}: expected an integer in [{lo}, {hi}]")

    def real(key, lo, hi, default):
        v = cfg.get(key, default)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (math.isfinite(v) and lo < v <= hi):
            raise NirmpiError(f"network config {key}={v!r}: expected a finite number in ({lo:g}, {hi:g}]")

    integer("in_dim", 2, 3, 2)
    integer("width", *LIMITS["width"], 128)
    integer("depth", *LIMITS["depth"], 3)
    w_lo, w_hi = LIMITS["omega0"]
    if name == "grid":
        shape = cfg.get("shape")
        if (not isinstance(shape, (list, tuple)) or len(shape) != cfg.get("in_dim", 2) or
                not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 4096 for n in shape)):
            raise NirmpiError(f"network config shape={shape!r}: expected in_dim integers in [1, 4096]")
        integer("levels", *LIMITS["levels"], 6)
        integer("features", *LIMITS["features"], 4)
        integer("min_res", 2, 4096, 4)
        integer("hidden", *LIMITS["width"], 32)
        real("max_scale", 0.0, 16.0, 1.0)
        real("init_std", -1.0, 10.0, 1e-2)
        cells = sum(math.prod(s) for s in level_shapes(shape, cfg.get("levels", 6), cfg.get("min_res", 4),
                                                        cfg.get("max_scale", 1.0)))
        if cells > LIMITS["grid_cells"]:
            raise NirmpiError(f"network config grid: {cells:,} feature cells; the limit is {LIMITS['grid_cells']:,}")
    elif name == "siren":
        real("omega0", w_lo, w_hi, 30.0)
        real("hidden_omega0", w_lo, w_hi, 30.0)
        if not isinstance(cfg.get("fold", True), bool):
            raise NirmpiError(f"network config fold={cfg['fold']!r}: expected true or false")
    else:
        integer("num_features", *LIMITS["num_features"], 128)
        real("sigma", 0.0, 1e4, 4.0)
    b = cfg.get("output_bias", 0.0)
    if not isinstance(b, (int, float)) or isinstance(b, bool) or not (math.isfinite(b) and abs(b) <= 1e6):
        raise NirmpiError(f"network config output_bias={b!r}: expected a finite number")
    if cfg.get("positive") not in (None, "softplus", "relu", "square"):
        raise NirmpiError(f"network config positive={cfg['positive']!r}: expected null, softplus, relu or square")
    n = parameter_count(cfg)
    if n > LIMITS["parameters"]:
        raise NirmpiError(f"network config {name} width {cfg.get('width')} × depth {cfg.get('depth')} makes "
                          f"{n:,} parameters; the limit is {LIMITS['parameters']:,}")
    return cfg


def expected_state_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes `build_network(config)` has, computed without building it."""
    cfg = check_network_config(config)
    if cfg.get("network") == "grid":
        return grid_state_shapes(cfg)
    d, w, depth = int(cfg.get("in_dim", 2)), int(cfg.get("width", 128)), int(cfg.get("depth", 3))
    shapes: dict[str, tuple[int, ...]] = {}
    if cfg.get("network", "siren") == "fourier":
        nf = int(cfg.get("num_features", 128))
        shapes["B"] = (nf, d)
        ins = [2 * nf] + [w] * depth
    else:
        ins = [d] + [w] * depth
    for i, fan_in in enumerate(ins):
        shapes[f"layers.{i}.weight"] = (w, fan_in)
        shapes[f"layers.{i}.bias"] = (w,)
    shapes["out.weight"], shapes["out.bias"] = (1, w), (1,)
    return shapes


def build_network(config: dict, seed: int | None = 0) -> nn.Module:
    """Build a network from its `config()` dict (the 'network' key picks the class); sizes are
    checked first (`check_network_config`)."""
    cfg = check_network_config(config)
    name = cfg.pop("network", "siren")
    try:
        return NETWORKS[name](**cfg, seed=seed)
    except TypeError as e:
        raise NirmpiError(f"network config for {name!r} is invalid: {e}") from None


class Field:
    """A trained coordinate network on the FOV of `grid`.

    network: a module mapping (P, ndim) normalised coordinates to (P,) values.
    grid: the native (training) grid; its FOV defines the normalised box [-1, 1].
    config: JSON-serialisable training config (incl. the network config under "network").
    params: preprocessing parameters of the Problem it was trained on (JSON-serialisable).
    scale: the network output is multiplied by this (training works on u / scale so the network
        sees values of order one whatever the data units).
    """

    def __init__(self, network: nn.Module, grid: Grid, config: dict | None = None,
                 params: dict | None = None, scale: float = 1.0):
        self.network = network
        self.grid = grid
        self.config = dict(config or {})
        self.params = dict(params or {})
        self.scale = float(scale)

    @property
    def ndim(self) -> int:
        return self.grid.ndim

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def network_config(self) -> dict:
        return self.network.config()

    def evaluate(self, coords, batch_size: int = 1 << 18) -> np.ndarray:
        """Values at normalised coordinates `coords` (P, ndim) → float32 (P,), in batches."""
        if isinstance(coords, torch.Tensor):
            coords = coords.detach().cpu().numpy()
        coords = np.asarray(coords, dtype=np.float32)
        if coords.ndim != 2 or coords.shape[1] != self.ndim:
            raise NirmpiError(f"Field.evaluate expects coordinates of shape (P, {self.ndim}), got {coords.shape}")
        out = np.empty(coords.shape[0], np.float32)
        dev = self.device
        self.network.eval()
        with torch.inference_mode():
            for i in range(0, coords.shape[0], batch_size):
                c = torch.from_numpy(coords[i:i + batch_size]).to(dev)
                out[i:i + batch_size] = (self.network(c) * self.scale).float().cpu().numpy()
        return out

    def evaluate_tensor(self, coords: torch.Tensor) -> torch.Tensor:
        """Same as `evaluate` on a tensor already on the field's device (no batching, no copy)."""
        return self.network(coords) * self.scale

    def to(self, device) -> "Field":
        self.network.to(device)
        return self

    def __repr__(self) -> str:
        return (f"Field({self.network_config()}, grid={self.grid.shape}, fov={self.grid.fov}, "
                f"scale={self.scale:.4g})")

    def state(self) -> dict[str, Any]:
        """Everything but the weights, JSON-serialisable (used by checkpoints)."""
        return {"network": self.network_config(), "grid": self.grid.to_dict(), "config": self.config,
                "params": self.params, "scale": self.scale}
