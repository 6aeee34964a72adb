"""Where a study keeps its models: one folder per study under the models cache, one per profile.

Resolved when called (not at import), so a run that moves the models cache (``helpers.run``,
``SIMSUITE_MODELS_CACHE``) is followed; profiles never overwrite each other's models.
"""

from __future__ import annotations

from pathlib import Path

from helpers import config


def folder(study: str, profile: str | None = None) -> Path:
    """``<models cache>/<study>/<profile>`` (``<models cache>/<study>`` without a profile)."""
    base = config.MODELS_CACHE / study
    return base / profile if profile else base
