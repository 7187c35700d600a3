"""wsec: a compiler from ONNX neural-network graphs to wafer-scale layouts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wsec")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"
