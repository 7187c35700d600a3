"""wsec: a compiler from ONNX neural-network graphs to wafer-scale layouts."""

from __future__ import annotations

from typing import Any

# the Python API (docs/api.md), imported on first use
# (`wsec.run` is the module of `wsec run`, which calls the API's run when called)
_API = {"compile": "api", "load": "run", "run": "run", "Compiled": "api", "RunResult": "run",
        "WsecError": "ir.errors", "UsageError": "ir.errors"}
__all__ = ["Compiled", "RunResult", "UsageError", "WsecError", "__version__", "compile",
           "load", "run"]


def __getattr__(name: str) -> Any:
    """`wsec.__version__` and the API, looked up on first use: importing wsec
    stays cheap, so the command line is inside its Ctrl-C handling almost at
    once."""
    if name in _API:
        import importlib

        module = importlib.import_module(f"wsec.{_API[name]}")
        value = module if name == "run" else getattr(module, name)
        globals()[name] = value
        return value
    if name != "__version__":
        raise AttributeError(f"module 'wsec' has no attribute '{name}'")
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("wsec")
    except PackageNotFoundError:  # running from a source tree without install
        v = "0.0.0+src"
    globals()["__version__"] = v
    return v
