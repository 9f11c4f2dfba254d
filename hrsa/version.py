"""The installed hrsa version, recorded in every capture and comparison (attr ``hrsa_version``)."""

__version__ = "0.1.0"
