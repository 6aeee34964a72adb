"""Every notebook's settings by profile, read one way: ``settings(notebook, profile, **overrides)``.

The settings themselves are data, in one file beside the notebooks they configure,
``notebooks/profiles.yaml`` (:data:`helpers.config.PROFILES_FILE`): three profiles, ``smoke`` (CI:
every notebook end to end in a few minutes), ``default`` (a laptop or a 2-core CPU: the registry's
budgets) and ``full`` (a GPU: the full Fashion-MNIST, longer training), and for each notebook (its
file name without ``.ipynb``) the settings it takes in each. A notebook reads them in the cell after
its ``parameters`` cell::

    profile = "default"   # the parameters cell: papermill (and helpers.run) may replace both
    overrides = {}

    settings = profiles.settings("04_training", profile, **overrides)

The runner (``python -m helpers.run -p epochs=3``) passes each notebook ``profile`` and the
overrides among its :func:`knobs`; benchmarks ask :func:`settings` for the profile they measure. A
new notebook (or study) adds its entry to the file, and nowhere else.
"""

from __future__ import annotations

import functools

from helpers import config

PROFILES = ("smoke", "default", "full")


class ProfileError(ValueError):
    """An unknown profile or notebook, an override the notebook does not take, or a malformed file."""


def _compose(raw: dict, name: str, entry: dict) -> dict[str, dict]:
    """One notebook's settings in each profile: the ``takes`` keys of the shared ``suite`` settings,
    then ``all`` (the same in every profile), then the profile's own values."""
    unknown = sorted(set(entry) - {"takes", "all", *PROFILES})
    if unknown:
        raise ProfileError(f"{config.PROFILES_FILE}: {name} has unknown keys {unknown}")
    composed = {}
    for p in PROFILES:
        missing = sorted(set(entry.get("takes", [])) - set(raw["suite"][p]))
        if missing:
            raise ProfileError(f"{config.PROFILES_FILE}: {name} takes {missing}, which suite.{p} lacks")
        shared = {key: raw["suite"][p][key] for key in entry.get("takes", [])}
        composed[p] = {**shared, **entry.get("all", {}), **entry.get(p, {})}
    return composed


@functools.cache
def notebooks() -> dict[str, dict[str, dict]]:
    """``{notebook: {profile: settings}}``, read once from :data:`helpers.config.PROFILES_FILE`."""
    import yaml

    raw = yaml.safe_load(config.PROFILES_FILE.read_text(encoding="utf-8"))
    return {name: _compose(raw, name, entry or {}) for name, entry in raw["notebooks"].items()}


def _entry(notebook: str) -> dict[str, dict]:
    entries = notebooks()
    if notebook not in entries:
        raise ProfileError(
            f"no settings for notebook {notebook!r}; add its entry to {config.PROFILES_FILE} "
            f"(known: {', '.join(entries)})"
        )
    return entries[notebook]


def knobs(notebook: str) -> set[str]:
    """The settings ``notebook`` takes (the names an override may set)."""
    return set(_entry(notebook)["default"])


def settings(notebook: str, profile: str = "default", **overrides) -> dict:
    """The settings of ``notebook`` in ``profile``, with ``overrides`` replacing the profile's values
    (None included: ``epochs=None`` asks for the registry's budgets)."""
    if profile not in PROFILES:
        raise ProfileError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    entry = _entry(notebook)
    unknown = sorted(set(overrides) - set(entry[profile]))
    if unknown:
        raise ProfileError(
            f"{notebook} takes no setting {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(sorted(entry[profile]))}"
        )
    return {**entry[profile], **overrides}
