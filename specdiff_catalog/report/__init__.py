"""Validation and reporting on top of a run's output store (``evaluate``)."""
