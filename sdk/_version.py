"""The installed distribution's version (one source: pyproject.toml)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("latentwire")
except PackageNotFoundError:  # running from a checkout without an install
    __version__ = "0.0.0+unknown"
