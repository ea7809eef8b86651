"""The package version (one place; ``poisonlab.__version__`` re-exports it)."""

__version__ = "0.1.0"
