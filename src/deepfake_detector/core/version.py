"""The package's version: pyproject.toml's, as installed (one number for the service, the API and the CLI)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deepfake-detector")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
