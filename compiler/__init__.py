"""vlc: a multi-target deployment compiler for vision and vision-language models."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("vlc")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"
