"""What a WOE holder keeps: its WOE tables (a finished job) and an open job's bins and counts.

Why apart from the protocol (``passive.py``): the bins, merge maps and WOE values are the
holder's at rest (its model file, 0600) and feed its own LR (``parties.holder.views``); the
servicer only moves them through the protocol's steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from federation.crypto import PaillierEngine, PublicParams
from models.base import HolderJob
from models.binning import QuantileBinner
from models.woe.reference import MIN_BIN_SAMPLES, WoeError, iv_strength

__all__ = ["HolderFeatureWoe", "HolderWoeModel", "WoeJob"]


@dataclass
class HolderFeatureWoe:
    """A holder's WOE table for one of its columns: ``bin_map`` maps its own ``QuantileBinner``
    bins to WOE bins; ``counts`` are rows per WOE bin (the holder never learns goods/bads as
    such, but can derive bin bad rates from ``woe`` and ``counts`` — see docs/scorecard.md)."""

    feature: int
    name: str
    bin_map: np.ndarray
    woe: np.ndarray
    iv: float
    counts: np.ndarray

    @property
    def strength(self) -> str:
        return iv_strength(self.iv)

    def transform(self, bins: Any) -> np.ndarray:
        return np.asarray(self.woe[self.bin_map[np.asarray(bins, dtype=np.int64)]])

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "name": self.name,
            "bin_map": self.bin_map.tolist(),
            "woe": [float(v) for v in self.woe],
            "iv": float(self.iv),
            "counts": self.counts.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HolderFeatureWoe:
        return cls(
            feature=int(data["feature"]),
            name=str(data["name"]),
            bin_map=np.asarray(data["bin_map"], dtype=np.int64),
            woe=np.asarray(data["woe"], dtype=np.float64),
            iv=float(data["iv"]),
            counts=np.asarray(data["counts"], dtype=np.int64),
        )


@dataclass
class HolderWoeModel:
    """The holder's own result of a WOE job: its bins (edges are data values: keep it here) and
    one WOE table per column, in its column order."""

    binner: QuantileBinner
    features: list[HolderFeatureWoe]
    alignment_id: str = ""
    min_bin_samples: int = MIN_BIN_SAMPLES

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def transform(self, values: Any) -> np.ndarray:
        """Raw feature values (rows, features; NaN = missing) → WOE values."""
        bins = self.binner.transform(np.asarray(values, dtype=np.float64))
        return np.column_stack([f.transform(bins[:, j]) for j, f in enumerate(self.features)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "xinyidai.woe.holder/1",
            "binner": self.binner.to_dict(),
            "features": [f.to_dict() for f in self.features],
            "alignment_id": self.alignment_id,
            "min_bin_samples": self.min_bin_samples,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HolderWoeModel:
        try:
            if data.get("format") != "xinyidai.woe.holder/1":
                raise ValueError(f"format {data.get('format')!r}")
            model = cls(
                binner=QuantileBinner.from_dict(data["binner"]),
                features=[HolderFeatureWoe.from_dict(f) for f in data["features"]],
                alignment_id=str(data.get("alignment_id", "")),
                min_bin_samples=int(data.get("min_bin_samples", MIN_BIN_SAMPLES)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WoeError(f"not a saved holder WOE model: {exc}") from None
        if len(model.features) != model.binner.n_features_in_:
            raise WoeError("saved holder WOE model: tables and binned features differ in number")
        return model


@dataclass(kw_only=True)
class WoeJob(HolderJob):
    """An open job at the holder: the bank's public key, the holder's (small-merged) bins."""

    alignment_id: str
    n_rows: int
    params: PublicParams
    engine: PaillierEngine
    binner: QuantileBinner
    names: list[str]
    small_maps: list[np.ndarray]  # per feature: binner bin → sent bin
    sent_bins: np.ndarray  # (n_rows, n_features) int64
    sent_n_bins: np.ndarray
    counts: list[np.ndarray]  # per feature: rows per sent bin
    min_bin_samples: int
    sums_sent: bool = False

    def close(self) -> None:
        self.engine.close()
