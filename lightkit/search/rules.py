"""The pure rules of a coarse-to-fine search: range narrowing and border warnings.

Functions of a :class:`~lightkit.search.config.Param` and trial values only: no Optuna, no Lightning,
testable with plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from lightkit.search.config import Param

__all__ = ["BorderWarning", "border_warnings", "narrow"]


def narrow(param: Param, values: Sequence[float], margin: float = 0.5, within: Param | None = None) -> Param:
    """The range of ``param`` around the ``values`` of the best trials.

    The span of the values on the sampling axis (log10 for log parameters) is widened by ``margin``
    times itself on each side (a tenth of the range when all values coincide) and clipped to
    ``within`` (default ``param``). Categorical parameters are returned unchanged.
    """
    if not param.numeric or not values:
        return param
    outer = within or param
    lo_s, hi_s = outer.to_scale(outer.low), outer.to_scale(outer.high)  # type: ignore[arg-type]
    scaled = [param.to_scale(v) for v in values]
    vmin, vmax = min(scaled), max(scaled)
    pad = margin * (vmax - vmin) if vmax > vmin else 0.05 * (hi_s - lo_s)
    low = param.from_scale(max(lo_s, vmin - pad))
    high = param.from_scale(min(hi_s, vmax + pad))
    if param.type == "int":
        low, high = math.floor(low), math.ceil(high)
        if low == high:
            low, high = max(int(outer.low), low - 1), min(int(outer.high), high + 1)  # type: ignore[arg-type]
    return replace(param, low=low, high=high)


@dataclass
class BorderWarning:
    """The best value of a numeric parameter lies on the edge of its range."""

    stage: str
    key: str
    edge: Literal["lower", "upper"]
    best: float
    low: float
    high: float
    suggested_low: float
    suggested_high: float
    log: bool

    def message(self) -> str:
        kind = "loguniform" if self.log else "range"
        return (f"search: stage {self.stage!r}: best {self.key}={self.best:.4g} lies at the {self.edge} edge "
                "of "
                f"[{self.low:.4g}, {self.high:.4g}] ({kind}); the optimum may lie outside: widen it to "
                f"low: {self.suggested_low:.4g}, high: {self.suggested_high:.4g}.")


def border_warnings(space: dict[str, Param], best: dict[str, Any], stage: str = "",
                    fraction: float = 0.15) -> list[BorderWarning]:
    """A :class:`BorderWarning` for each numeric parameter whose best value lies in the outer
    ``fraction`` of its range (on the sampling axis). The suggested range moves that edge outward by
    half the range's width (a factor for log parameters); a range starting at >= 0 is not widened below 0,
    and no warning is given when the edge cannot move."""
    out = []
    for key, param in space.items():
        if not param.numeric or key not in best:
            continue
        lo, hi = param.to_scale(param.low), param.to_scale(param.high)  # type: ignore[arg-type]
        pos = (param.to_scale(best[key]) - lo) / (hi - lo)
        if fraction <= pos <= 1 - fraction:
            continue
        edge: Literal["lower", "upper"] = "lower" if pos < fraction else "upper"
        width = hi - lo
        new_lo, new_hi = (lo - width / 2, hi) if edge == "lower" else (lo, hi + width / 2)
        low, high = param.from_scale(new_lo), param.from_scale(new_hi)
        if not param.is_log and param.low >= 0:  # type: ignore[operator]
            low = max(low, 0.0)
        if param.type == "int":
            low, high = math.floor(low), math.ceil(high)
        if (low, high) == (param.low, param.high):
            continue
        out.append(BorderWarning(stage, key, edge, float(best[key]), float(param.low), float(param.high),  # type: ignore[arg-type]
                                 low, high, param.is_log))
    return out
