"""Tensor types and lazily-held constant data.

Constants never force their bytes into memory on creation: a `Splat` is one
scalar, an `External` is a (file, offset, length) reference that is
memory-mapped only when a pass asks for the values, and only `Dense` holds an
in-memory array (small tensors, or values a pass has computed).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# dtype names used in the textual IR, mapped to numpy dtypes
DTYPES: dict[str, np.dtype] = {
    "f16": np.dtype(np.float16),
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "i8": np.dtype(np.int8),
    "i16": np.dtype(np.int16),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
    "u8": np.dtype(np.uint8),
    "u16": np.dtype(np.uint16),
    "u32": np.dtype(np.uint32),
    "u64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
}
_NP_TO_NAME = {v: k for k, v in DTYPES.items()}


def dtype_name(dt: Any) -> str:
    """The IR name of a numpy dtype (e.g. float32 -> 'f32')."""
    return _NP_TO_NAME[np.dtype(dt)]


@dataclass(frozen=True)
class TensorType:
    """A statically shaped tensor type: element type name and dimensions."""

    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype '{self.dtype}'")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def itemsize(self) -> int:
        return self.np_dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"


class ConstData:
    """Values of a constant tensor, held lazily. Subclasses say how."""

    type: TensorType

    def array(self) -> np.ndarray:
        """The values as an ndarray (may be a read-only memory map)."""
        raise NotImplementedError

    @property
    def is_splat(self) -> bool:
        return False


@dataclass
class Splat(ConstData):
    """Every element equals one scalar; costs nothing to hold at any size."""

    type: TensorType
    value: float | int | bool

    @property
    def is_splat(self) -> bool:
        return True

    def array(self) -> np.ndarray:
        return np.full(self.type.shape, self.value, dtype=self.type.np_dtype)


@dataclass
class Dense(ConstData):
    """Values held in memory (small tensors, or results of constant folding)."""

    type: TensorType
    data: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=self.type.np_dtype).reshape(self.type.shape)

    def array(self) -> np.ndarray:
        return self.data

    def to_base64(self) -> str:
        return base64.b64encode(np.ascontiguousarray(self.data).astype(
            self.data.dtype.newbyteorder("<")).tobytes()).decode("ascii")

    @staticmethod
    def from_base64(type_: TensorType, text: str) -> Dense:
        raw = base64.b64decode(text)
        arr = np.frombuffer(raw, dtype=type_.np_dtype.newbyteorder("<")).astype(type_.np_dtype)
        return Dense(type_, arr.reshape(type_.shape))


@dataclass
class External(ConstData):
    """Values stored in a file (ONNX external data): path relative to `base_dir`.

    `array()` memory-maps the range; nothing is read until a caller touches it.
    `perm` makes the constant a transposed view of what the file stores: the
    range holds a row-major array of shape `stored_shape()`, and the value is
    that array transposed by `perm` (so exporters' Transpose of a weight folds
    without reading the weight; see `transposed` and `reshaped`).
    """

    type: TensorType
    path: str
    offset: int
    length: int
    base_dir: str = field(default="", compare=False)
    perm: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.perm is not None:
            self.perm = tuple(int(p) for p in self.perm)
            if sorted(self.perm) != list(range(len(self.type.shape))):
                raise ValueError(f"perm {list(self.perm)} is no permutation of the "
                                 f"{len(self.type.shape)} axes of {self.type}")
            if self.perm == tuple(range(len(self.perm))):
                self.perm = None

    def resolved_path(self) -> str:
        return os.path.join(self.base_dir, self.path) if self.base_dir else self.path

    def stored_shape(self) -> tuple[int, ...]:
        """The shape of the row-major array the file range holds."""
        if self.perm is None:
            return self.type.shape
        inverse = np.argsort(self.perm)
        return tuple(self.type.shape[int(i)] for i in inverse)

    def array(self) -> np.ndarray:
        if self.type.numel == 0:
            return np.zeros(self.type.shape, dtype=self.type.np_dtype)
        mm = np.memmap(self.resolved_path(), dtype=self.type.np_dtype.newbyteorder("<"),
                       mode="r", offset=self.offset, shape=(self.type.numel,))
        stored = mm.reshape(self.stored_shape())
        return stored if self.perm is None else stored.transpose(self.perm)

    def transposed(self, perm: tuple[int, ...] | list[int], type_: TensorType) -> External:
        """This constant transposed by `perm` (ONNX Transpose), still unread."""
        mine = self.perm or tuple(range(len(self.type.shape)))
        return External(type_, self.path, self.offset, self.length, self.base_dir,
                        tuple(mine[int(p)] for p in perm))

    def reshaped(self, type_: TensorType) -> External | None:
        """This constant relabelled as `type_` (same elements in the same
        row-major order), still unread; None for a transposed view, whose
        elements are not in file order."""
        if self.perm is not None or type_.numel != self.type.numel or \
                type_.dtype != self.type.dtype:
            return None
        return External(type_, self.path, self.offset, self.length, self.base_dir)


def splat_of(arr: np.ndarray) -> Splat | None:
    """A Splat equal to `arr` when all its elements are equal, else None."""
    a = np.asarray(arr)
    if a.size == 0:
        return None
    flat = a.reshape(-1)
    first = flat[0]
    if np.all(flat == first) or (np.issubdtype(a.dtype, np.floating) and np.all(np.isnan(flat))):
        return Splat(TensorType(dtype_name(a.dtype), a.shape), first.item())
    return None
