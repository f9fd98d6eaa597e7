"""Intervals for benchmark figures: a percentile bootstrap over episodes, paired across methods."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["bootstrap", "figure"]


def bootstrap(statistic: Callable[[np.ndarray], float | None], n_items: int, *, resamples: int = 1000,
              seed: int = 0, level: float = 0.95) -> tuple[float | None, list[float] | None]:
    """``(value, [low, high])`` of ``statistic(indices)`` on all ``n_items`` items and its percentile
    interval over ``resamples`` resamples of the items with replacement.

    ``statistic`` gets an index array (which items, repeats allowed), so several figures computed
    from one resample stay paired: a ratio of two methods resamples the same episodes for both.
    A statistic that is undefined on a resample (None, e.g. a ratio over zero) is left out of it.
    """
    value = statistic(np.arange(n_items))
    if value is None or n_items < 2:
        return value, None
    rng = np.random.default_rng(seed)
    draws = [statistic(rng.integers(0, n_items, n_items)) for _ in range(resamples)]
    draws = [d for d in draws if d is not None]
    if not draws:
        return value, None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return value, [round(float(low), 4), round(float(high), 4)]


def figure(value: float | None, ci: Sequence[float] | None) -> dict[str, object]:
    """A figure as the JSON reports write it: ``{"value": v, "ci95": [low, high]}``."""
    return {"value": None if value is None else round(float(value), 4),
            "ci95": None if ci is None else list(ci)}
