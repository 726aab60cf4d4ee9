"""jessy-adapters: one training spec, many fine-tuning backends, one normalised output."""

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402

__all__ = ["hookimpl", "__version__"]
