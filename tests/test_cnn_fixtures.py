"""Small real CNNs, as PyTorch's exporters write them, compiled for the full
wse2 wafer, simulated, and checked against onnxruntime (rtol 1e-4, atol 1e-5).

Why: the light models are old opset-6..9 exports of classic CNNs; real
models come from newer exporters and other families. These fixtures (see
tests/fixtures/cnn/README.md) cover MobileNetV2/V3 (depthwise convs, Clip,
HardSwish, squeeze-excitation), EfficientNet (SiLU), U-Net (ConvTranspose,
Resize nearest + bilinear, opset 9 Upsample), an FPN/YOLO head (Resize by
computed sizes, align_corners, Slice), ResNet at an odd input size,
ConvNeXt (LayerNorm over channels, GroupNorm, GELU), VGG (adaptive
pooling), bicubic Resize / PixelShuffle / grouped ConvTranspose, a
DeepLab ASPP (dilated convs, opset-18 Resize rewritten to 17), 1-D and 3-D
CNNs (dynamo's GatherND interpolation), a YOLOv8-style head, instance norm
with reflection padding, ShuffleNet's channel shuffle and opset-18 Mish.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from wsec.backends.emit import write_binary
from wsec.backends.loader import load_binary
from wsec.backends.sim import simulate
from wsec.driver import CompileOptions, compile_model
from wsec.run import compare, onnx_reference

CNN = pathlib.Path(__file__).resolve().parent / "fixtures" / "cnn"
NAMES = sorted(p.stem for p in CNN.glob("*.onnx"))
RTOL, ATOL = 1e-4, 1e-5


def _inputs(name: str) -> dict[str, np.ndarray]:
    d = np.load(CNN / f"{name}.npz")
    return {k[3:]: d[k] for k in d.files if k.startswith("in.")}


def test_fixture_set_is_complete() -> None:
    assert len(NAMES) >= 12
    for n in NAMES:
        assert (CNN / f"{n}.npz").exists(), n


@pytest.mark.parametrize("name", NAMES)
def test_cnn_simulates_like_onnxruntime(name: str, tmp_path: pathlib.Path) -> None:
    res = compile_model(str(CNN / f"{name}.onnx"), CompileOptions())
    out = tmp_path / f"{name}.bin"
    write_binary(res.module, str(out))
    prog = load_binary(str(out))
    assert (prog.target.name, prog.target.width, prog.target.height) == ("wse2", 750, 994)
    ins = _inputs(name)
    got = simulate(prog, ins).outputs
    ref, _ = onnx_reference(str(CNN / f"{name}.onnx"), ins)
    stored = dict(np.load(CNN / f"{name}.npz"))
    assert set(got) == set(ref)
    for k, v in got.items():
        np.testing.assert_allclose(ref[k], stored[f"out.{k}"], rtol=RTOL, atol=ATOL)
        row = compare(k, v, ref[k], RTOL, ATOL)
        assert row.ok, f"{name}:{k}: max abs {row.max_abs:.3g}, max rel {row.max_rel:.3g}"


def test_resize_models_use_the_resize_kind() -> None:
    for name, modes in (("unet_o17", {"linear", "nearest"}), ("misc_o11", {"cubic", "nearest"}),
                        ("unet_o9", {"linear", "nearest"})):
        m = compile_model(str(CNN / f"{name}.onnx"), CompileOptions()).module
        ks = [k for k in m.kernels() if k.kind == "resize"]
        assert ks, name
        got = {str(n.attrs.get("mode", "nearest")) for k in ks for n in k.body if n.op == "Resize"}
        assert got == modes, (name, got)
