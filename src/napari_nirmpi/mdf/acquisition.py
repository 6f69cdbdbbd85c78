"""The receiver and drive-field description a system matrix and a measurement must share."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import NirmpiError

@dataclass
class Acquisition:
    """Drive field + receiver: what a system matrix and a measurement must share."""

    base_frequency: float
    dividers: tuple[int, ...]
    drive_strength: tuple[float, ...]
    num_sampling_points: int
    bandwidth: float
    num_rx_channels: int
    drive_phase: tuple[float, ...] | None = None
    gradient: np.ndarray | None = None
    num_periods: int = 1
    num_averages: int = 1
    transfer_function: np.ndarray | None = None

    def __post_init__(self):
        try:
            self.base_frequency = float(self.base_frequency)
            self.dividers = tuple(int(d) for d in np.ravel(self.dividers))
            self.drive_strength = tuple(float(s) for s in np.ravel(self.drive_strength))
            self.num_sampling_points = int(self.num_sampling_points)
            self.bandwidth = float(self.bandwidth)
            self.num_rx_channels = int(self.num_rx_channels)
            self.num_periods = int(self.num_periods)
            self.num_averages = int(self.num_averages)
            if self.drive_phase is not None:
                self.drive_phase = tuple(float(p) for p in np.ravel(self.drive_phase))
            if self.gradient is not None:
                self.gradient = np.asarray(self.gradient, dtype=np.float64).reshape(3, 3)
            if self.transfer_function is not None:
                self.transfer_function = np.asarray(self.transfer_function, dtype=np.complex128)
        except (TypeError, ValueError) as e:
            raise NirmpiError(f"acquisition: malformed value ({e})") from None
        problems = []
        if not (math.isfinite(self.base_frequency) and self.base_frequency > 0):
            problems.append(f"base_frequency must be positive and finite, got {self.base_frequency}")
        if not self.dividers or any(d < 1 for d in self.dividers):
            problems.append(f"dividers must be positive integers, got {self.dividers}")
        if len(self.drive_strength) != len(self.dividers):
            problems.append(f"drive_strength needs {len(self.dividers)} values (one per drive "
                            f"channel), got {len(self.drive_strength)}")
        if not all(math.isfinite(s) for s in self.drive_strength):
            problems.append(f"drive_strength must be finite, got {self.drive_strength}")
        if self.drive_phase is not None and (len(self.drive_phase) != len(self.dividers)
                                             or not all(math.isfinite(p) for p in self.drive_phase)):
            problems.append(f"drive_phase needs {len(self.dividers)} finite values, got {self.drive_phase}")
        if self.num_sampling_points < 2:
            problems.append(f"num_sampling_points must be >= 2, got {self.num_sampling_points}")
        if not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
            problems.append(f"bandwidth must be positive and finite, got {self.bandwidth}")
        if self.num_rx_channels < 1:
            problems.append(f"num_rx_channels must be >= 1, got {self.num_rx_channels}")
        if self.num_periods < 1 or self.num_averages < 1:
            problems.append(f"num_periods and num_averages must be >= 1, got "
                            f"{self.num_periods}, {self.num_averages}")
        if self.gradient is not None and not np.all(np.isfinite(self.gradient)):
            problems.append("gradient must be finite")
        if self.transfer_function is not None:
            want = (self.num_rx_channels, self.num_sampling_points // 2 + 1)
            if self.transfer_function.shape != want:
                problems.append(f"transfer_function must have shape {want}, got "
                                f"{self.transfer_function.shape}")
            elif not np.all(np.isfinite(self.transfer_function)):
                problems.append("transfer_function must be finite")
        if problems:
            raise NirmpiError("acquisition: " + "; ".join(problems))

    @property
    def cycle(self) -> float:
        """Drive-field cycle (s) = lcm(dividers) / base frequency."""
        return math.lcm(*self.dividers) / self.base_frequency

    @property
    def num_frequencies(self) -> int:
        return self.num_sampling_points // 2 + 1

    def frequencies(self) -> np.ndarray:
        K = self.num_frequencies
        return np.arange(K) * (self.bandwidth / (K - 1))

    def drive_frequencies(self) -> np.ndarray:
        return self.base_frequency / np.asarray(self.dividers, dtype=np.float64)

    def to_dict(self) -> dict:
        """JSON-serialisable summary (no transfer function)."""
        return {
            "base_frequency": self.base_frequency, "dividers": list(self.dividers),
            "drive_strength": list(self.drive_strength),
            "drive_phase": None if self.drive_phase is None else list(self.drive_phase),
            "num_sampling_points": self.num_sampling_points, "bandwidth": self.bandwidth,
            "num_rx_channels": self.num_rx_channels, "num_periods": self.num_periods,
            "num_averages": self.num_averages,
            "gradient": None if self.gradient is None else self.gradient.tolist(),
            "has_transfer_function": self.transfer_function is not None,
        }

