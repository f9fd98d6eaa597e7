"""What an operator sees of a message: a summary line or JSON object, a latent's norm and a
small heatmap of its values.

Used by ``latentwire sub`` on the client side and by the hub's dashboard; the heatmap work is
bounded (a strided view first, so a huge latent costs no more than a 1024 x 1024 one).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ._latent import Latent
from ._message import Message

HEATMAP_SIDE = 64  # a heatmap is at most this many cells a side
# Before averaging into cells, each axis is thinned to at most this many samples.
_MAX_SAMPLES = 1024
_NORM_CHUNK = 1 << 20  # elements converted to float64 at a time for the norm


def as_matrix(array: np.ndarray) -> np.ndarray:
    """A 2-D view of ``array``: rows are everything but the last axis (a 1-D array is one row)."""
    if array.ndim == 0:
        return array.reshape(1, 1)
    if array.ndim == 1:
        return array.reshape(1, -1)
    return array.reshape(-1, array.shape[-1])


def latent_norm(array: np.ndarray) -> float:
    """The L2 norm of every value (NaN if any is NaN), summed in float64 a chunk at a time."""
    flat = array.reshape(-1)
    total = 0.0
    for start in range(0, flat.size, _NORM_CHUNK):
        chunk = flat[start:start + _NORM_CHUNK].astype(np.float64)
        total += float(np.dot(chunk, chunk))
    return math.sqrt(total)


def _cells(length: int, cells: int) -> np.ndarray:
    """Start offsets of ``cells`` nearly equal runs covering ``length`` items."""
    return np.linspace(0, length, cells + 1).astype(np.int64)[:-1]


def heatmap(array: np.ndarray, side: int = HEATMAP_SIDE) -> np.ndarray:
    """The values as a float32 matrix of at most ``side`` x ``side`` cell means (rows: all but
    the last axis); non-finite values count as 0."""
    m = as_matrix(array)
    rows, cols = m.shape
    if rows == 0 or cols == 0:
        return np.zeros((1, 1), np.float32)
    # (R, C) -> (<=1024, <=1024): a strided view, no copy of a large latent
    m = m[::max(1, rows // _MAX_SAMPLES), ::max(1, cols // _MAX_SAMPLES)]
    m = np.nan_to_num(m.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    h, w = min(side, m.shape[0]), min(side, m.shape[1])
    r0, c0 = _cells(m.shape[0], h), _cells(m.shape[1], w)
    sums = np.add.reduceat(np.add.reduceat(m, r0, axis=0), c0, axis=1)  # (h, w)
    counts = np.outer(np.diff(np.append(r0, m.shape[0])), np.diff(np.append(c0, m.shape[1])))
    return (sums / counts).astype(np.float32)


def quantize(cells: np.ndarray) -> tuple[bytes, float, float]:
    """Cells as bytes 0-255 between their minimum and maximum, plus those two values."""
    lo, hi = float(cells.min()), float(cells.max())
    if hi <= lo:
        return bytes(cells.size), lo, hi
    q = np.rint((cells - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return q.tobytes(), lo, hi


def describe_latent(latent: Latent) -> dict[str, Any]:
    """dtype, shape, space, family and norm of a latent, as JSON-ready values."""
    norm = latent_norm(latent.numpy())
    return {"dtype": latent.dtype, "shape": list(latent.shape), "space": latent.space,
            "family": latent.family, "norm": norm if math.isfinite(norm) else None}


def describe(msg: Message) -> dict[str, Any]:
    """One message as a JSON-ready dict: routing fields and its body (text, latent summary or
    control)."""
    out: dict[str, Any] = {"topic": msg.topic, "sender": msg.sender, "id": msg.id,
                           "created_at": msg.created_at.isoformat()}
    if msg.redelivered:
        out["redelivered"] = True
    if msg.text is not None:
        out["text"] = msg.text
    elif msg.latent is not None:
        out["latent"] = describe_latent(msg.latent)
    elif msg.control is not None:
        out["control"] = {"kind": msg.control.kind, "args": msg.control.args}
    return out


def summary_line(msg: Message) -> str:
    """``topic [sender] body``: the text, or ``latent float32[8,64] space=hub family=gemma3
    norm=1.23``, or ``control KIND {args}``."""
    d = describe(msg)
    if "latent" in d:
        lat = d["latent"]
        norm = "nan" if lat["norm"] is None else f"{lat['norm']:.4g}"
        body = (f"latent {lat['dtype']}[{','.join(map(str, lat['shape']))}] space={lat['space'] or '-'} "
                f"family={lat['family'] or '-'} norm={norm}")
    elif "control" in d:
        body = f"control {d['control']['kind']} {json.dumps(d['control']['args'], sort_keys=True)}"
    else:
        body = d.get("text", "")
    return f"{msg.topic} [{msg.sender}] {body}"
