"""crdtkv's version: its one source (``crdtkv.__version__``, the wheel's metadata, status and metrics)."""

__version__ = "0.1.0"
