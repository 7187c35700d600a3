"""Allocate pass: SRAM maps from the kind's weight sharding, packed and
aligned, never below the cost model, and overflow explained."""

from __future__ import annotations

import fake_kinds as fk
import pytest
from wsec.ir.graph import Module
from wsec.ir.library_common import CODE_BYTES
from wsec.ir.target import get_target
from wsec.ir.types import TensorType
from wsec.passes.allocate import Allocate, largest_shard
from wsec.passes.base import PassContext, PassError

T = get_target("wse2", (16, 16))


def _one(w: int, h: int, wshape: tuple[int, ...], sram: int = 1024) -> Module:
    m = fk.sized("alloc")
    m.add_value("x", TensorType("f32", (1, 100)))
    m.inputs = ["x"]
    fk.box(m, "k", ["x", fk.const(m, "wt", wshape)], "y", w, h, sram=sram, out_shape=(1, 30))
    m.kernel("k").origin = ["Gemm_3"]
    m.outputs = ["y"]
    return fk.connect(m)


def test_map_regions_and_sizes() -> None:
    m = _one(3, 2, (10, 5))  # 10 rows over 3 columns: 4,4,2; 5 cols over 2 rows: 3,2
    Allocate().run(m, PassContext(T))
    k = m.kernel("k")
    got = [(r.name, r.offset, r.size) for r in k.sram]
    # weights 4*3 elements * 2 B = 24 -> 32; code; the kind budgets no more
    assert got == [("weights:wt", 0, 32), ("code", 32, CODE_BYTES)]
    assert m.attrs["max_sram"] == [32 + CODE_BYTES, "k"]


def test_regions_aligned_packed_and_cover_cost() -> None:
    m = _one(2, 2, (7, 3), sram=5000)
    Allocate().run(m, PassContext(T))
    regions = m.kernel("k").sram
    off = 0
    for r in regions:
        assert r.offset == off and r.size % 16 == 0
        off += r.size
    # what the kind's SRAM model budgets beyond weights and code is buffer space
    assert off >= 5000 and regions[-1].name == "buffers"


def test_largest_shard_probes_every_pe() -> None:
    m = _one(4, 3, (9, 7))  # dim0 blocks of 3 over 4 columns: 3,3,3,0; dim1 of 3: 3,3,1
    assert largest_shard(m.kernel("k"), 0, (9, 7), 4, 3) == 9
    m = _one(200, 1, (401,))  # blocks of 3: the first PEs hold the most
    assert largest_shard(m.kernel("k"), 0, (401,), 200, 1) == 3


def test_overflow_message() -> None:
    m = _one(1, 1, (128, 192))  # 24576 elements * 2 B on one PE
    with pytest.raises(PassError) as e:
        Allocate().run(m, PassContext(get_target("wse2", (16, 16))))
    total = 49152 + CODE_BYTES
    assert str(e.value) == (
        f"kernel 'k' (box, from Gemm_3) needs {total} B of SRAM per PE but a PE has 49152 B "
        f"(weights 49152 B, buffers 0 B, code {CODE_BYTES} B); re-size with more "
        "PEs (a faster bottleneck time gives every kernel more PEs) or choose knobs that shard "
        "the weights further")
    assert m.kernel("k").sram is None  # nothing half-done


def test_every_kernel_gets_a_map() -> None:
    m = fk.diamond()
    Allocate().run(m, PassContext(T))
    assert all(k.sram for k in m.kernels())
    assert m.attrs["max_sram"][0] == max(sum(r.size for r in k.sram) for k in m.kernels())
