"""Data: the benchmark and training sets shipped with the repository (``tasks``)."""
