"""wsec: a compiler from ONNX neural-network graphs to wafer-scale layouts."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """`wsec.__version__`, looked up on first use: importing wsec stays cheap,
    so the command line is inside its Ctrl-C handling almost at once."""
    if name != "__version__":
        raise AttributeError(f"module 'wsec' has no attribute '{name}'")
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("wsec")
    except PackageNotFoundError:  # running from a source tree without install
        v = "0.0.0+src"
    globals()["__version__"] = v
    return v
