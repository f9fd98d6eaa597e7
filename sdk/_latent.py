"""`Latent`: an n-dimensional array on the bus (numpy or torch), with its codec space and family.

The bytes on the wire are the array's little-endian, C-order buffer; dtype and shape travel in
the frame header. Nothing is pickled or text-encoded. torch is imported only when a torch
tensor is given or asked for, so a plain bus user never pays for it.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import ml_dtypes
import numpy as np
from pydantic import BaseModel, ConfigDict

from .errors import InvalidTensor

# Wire dtype name -> numpy dtype (little-endian). bfloat16 comes from ml_dtypes, the
# implementation JAX and TensorFlow use, so numpy users get a real bfloat16 array.
DTYPES: dict[str, np.dtype] = {
    "bool": np.dtype(np.bool_),
    "uint8": np.dtype("<u1"),
    "int8": np.dtype("<i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}
_NUMPY_TO_NAME = {dt: name for name, dt in DTYPES.items()}

# Bounds that keep a bad header from asking for absurd allocations.
MAX_NDIM = 32


def dtype_name(dtype: Any) -> str:
    """The wire name of a numpy or torch dtype, or raise `InvalidTensor` naming the allowed ones."""
    if "torch" in sys.modules and isinstance(dtype, sys.modules["torch"].dtype):
        name = str(dtype).removeprefix("torch.")
        name = {"bool": "bool"}.get(name, name)
        if name in DTYPES:
            return name
        raise InvalidTensor(f"unsupported dtype {dtype}; supported: {', '.join(DTYPES)}")
    try:
        np_dtype = np.dtype(dtype)
    except TypeError as exc:
        raise InvalidTensor(f"unsupported dtype {dtype!r}; supported: {', '.join(DTYPES)}") from exc
    name = _NUMPY_TO_NAME.get(np_dtype.newbyteorder("<") if np_dtype.byteorder == ">" else np_dtype)
    if name is None:
        raise InvalidTensor(f"unsupported dtype {np_dtype}; supported: {', '.join(DTYPES)}")
    return name


def expected_nbytes(dtype: str, shape: tuple[int, ...] | list[int]) -> int:
    """Bytes a tensor of ``dtype`` and ``shape`` occupies; raises `InvalidTensor` if either is bad."""
    np_dtype = DTYPES.get(dtype)
    if np_dtype is None:
        raise InvalidTensor(f"unknown dtype {dtype!r}; supported: {', '.join(DTYPES)}")
    if len(shape) > MAX_NDIM:
        raise InvalidTensor(f"shape has {len(shape)} dimensions; at most {MAX_NDIM} are allowed")
    if any(d < 0 for d in shape):
        raise InvalidTensor(f"shape {tuple(shape)} has a negative dimension")
    return math.prod(shape) * np_dtype.itemsize


def _is_torch(obj: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


class Latent(BaseModel):
    """An array sent over the bus: a numpy array or torch tensor plus where its values live.

    ``space`` names the codec space (``"hub"`` for the shared space, a family name for a
    family's own codec space); ``family`` names the model family that produced it. Received
    latents wrap a read-only numpy view of the received bytes (no copy); `torch()` returns a
    fresh tensor.

    >>> Latent(data=np.zeros((8, 64), np.float32), space="hub", family="gemma3").shape
    (8, 64)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    data: Any
    space: str | None = None
    family: str | None = None

    def __init__(self, data: Any = None, /, **kwargs: Any) -> None:
        if data is not None:
            kwargs["data"] = data
        # Checked here rather than in a pydantic validator so callers get our InvalidTensor,
        # not a pydantic ValidationError wrapping it.
        _check_data(kwargs.get("data"))
        super().__init__(**kwargs)

    @property
    def dtype(self) -> str:
        """Wire dtype name, e.g. ``"float32"`` or ``"bfloat16"``."""
        return dtype_name(self.data.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape as a tuple of ints."""
        return tuple(int(d) for d in self.data.shape)

    @property
    def nbytes(self) -> int:
        """Size of the raw bytes on the wire."""
        return expected_nbytes(self.dtype, self.shape)

    def numpy(self) -> np.ndarray:
        """The values as a numpy array (bfloat16 as an ``ml_dtypes.bfloat16`` array)."""
        if _is_torch(self.data):
            return _torch_to_numpy(self.data)
        return self.data

    def torch(self) -> Any:
        """The values as a torch tensor (imports torch; a received latent is copied once)."""
        import torch

        if isinstance(self.data, torch.Tensor):
            return self.data
        arr = np.ascontiguousarray(self.data)
        if self.dtype == "bfloat16":
            return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
        return torch.from_numpy(arr.copy() if not arr.flags.writeable else arr)

    def tobytes(self) -> bytes:
        """The raw little-endian, C-order bytes that travel on the wire."""
        arr = self.numpy()
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        return np.ascontiguousarray(arr).tobytes()

    @classmethod
    def frombuffer(
        cls,
        buffer: bytes | memoryview,
        dtype: str,
        shape: tuple[int, ...] | list[int],
        *,
        space: str | None = None,
        family: str | None = None,
    ) -> Latent:
        """Wrap received bytes without copying; raises `InvalidTensor` when they do not fit."""
        shape = tuple(int(d) for d in shape)
        want = expected_nbytes(dtype, shape)
        if len(buffer) != want:
            raise InvalidTensor(
                f"tensor bytes do not match dtype x shape: {dtype} {shape} needs {want} bytes, "
                f"got {len(buffer)}"
            )
        arr = np.frombuffer(buffer, dtype=DTYPES[dtype]).reshape(shape)
        return cls(data=arr, space=space or None, family=family or None)

    def __repr__(self) -> str:
        kind = "torch" if _is_torch(self.data) else "numpy"
        return (f"Latent({kind}, dtype={self.dtype}, shape={self.shape}, space={self.space!r}, "
                f"family={self.family!r})")

    __str__ = __repr__


def _check_data(value: Any) -> None:
    if _is_torch(value):
        dtype_name(value.dtype)
    elif isinstance(value, np.ndarray):
        dtype_name(value.dtype)
        if value.ndim > MAX_NDIM:
            raise InvalidTensor(f"array has {value.ndim} dimensions; at most {MAX_NDIM} are allowed")
    else:
        raise InvalidTensor(
            f"Latent data must be a numpy.ndarray or torch.Tensor, not {type(value).__name__}"
        )


def _torch_to_numpy(tensor: Any) -> np.ndarray:
    import torch

    t = tensor.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()
