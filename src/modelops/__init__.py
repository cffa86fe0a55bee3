"""modelops: simulation studies on Dask with per-task process isolation."""

__version__ = "0.1.0"
