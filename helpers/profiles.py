"""Every notebook's settings by profile: the one place a run's sizes, budgets and knobs are written.

Three profiles: ``smoke`` (CI: every notebook end to end in a few minutes), ``default`` (a laptop or
a 2-core CPU: the registry's budgets) and ``full`` (a GPU: the full Fashion-MNIST, longer training).

:data:`NOTEBOOKS` maps a notebook's name (its file name without ``.ipynb``) to its settings in each
profile. A notebook reads them one way, in the cell after its ``parameters`` cell::

    profile = "default"   # the parameters cell: papermill (and helpers.run) may replace both
    overrides = {}

    settings = profiles.settings("04_training", profile, **overrides)

The runner (``python -m helpers.run -p epochs=3``) passes each notebook ``profile`` and the
overrides among its :func:`knobs`; benchmarks ask :func:`settings` for the profile they measure. A
new notebook (or study) adds its entry here, and nowhere else.
"""

from __future__ import annotations

PROFILES = ("smoke", "default", "full")


class ProfileError(ValueError):
    """An unknown profile or notebook, or an override the notebook does not take."""


# The core suite's settings (notebooks 01-07), shared: a notebook takes the keys it uses (_suite).
_SUITE: dict[str, dict] = {
    "smoke": {
        "dataset": "mnist",
        "source": "auto",
        "seed": 42,
        "epochs": 1,
        "steps_per_epoch": 2,
        "batch_size": 32,
        "force": False,
        "augment": None,
        "train_processes": 1,  # two steps per model: starting worker processes would cost more
        "umap_points": 300,
        "projection": "umap",
        "filters_per_layer": 4,
        "ascent_steps": 5,
        "n_trials": 3,
    },
    "default": {
        "dataset": "mnist",
        "source": "auto",
        "seed": 42,
        "epochs": None,  # None: each model's own budget from the registry
        "steps_per_epoch": None,
        "batch_size": None,
        "force": False,
        "augment": None,
        "train_processes": 2,  # two one-thread workers (helpers.training.train_many)
        "umap_points": 1000,
        "projection": "umap",
        "filters_per_layer": 16,
        "ascent_steps": 20,
        "n_trials": 3,
    },
    "full": {
        "dataset": "fashion_mnist",
        "source": "auto",
        "seed": 42,
        "epochs": 30,
        "steps_per_epoch": 200,
        "batch_size": 256,
        "force": False,
        # numpy augmentation in one host thread feeds a GPU only a tenth of what it trains at
        # (benchmarks/results/throughput.json, gpu_training): augment in the training graph there
        "augment": "device",
        "train_processes": 1,
        "umap_points": 2000,
        "projection": "umap",
        "filters_per_layer": 32,
        "ascent_steps": 30,
        "n_trials": 3,
    },
}

_DATA = ("dataset", "source", "seed")
_BUDGET = ("epochs", "steps_per_epoch", "batch_size", "force")


def _suite(keys=(), by_profile: dict | None = None, **same) -> dict[str, dict]:
    """Each profile's settings: ``keys`` of the shared suite settings, ``same`` in every profile,
    and ``by_profile[profile]`` (the settings that differ)."""
    return {p: {**{k: _SUITE[p][k] for k in keys}, **same, **(by_profile or {}).get(p, {})} for p in PROFILES}


# notebook 08: train/val/test: images of the official split kept (None = all); classifier: the
# registry entry trained (densenet_bc_fashion, the reference's, in "full"; the smaller
# densenet_bc_fashion_small on the CPU, where the reference network learns the easy classes only in
# the time a notebook has: 0.374 test accuracy after 25 steps of 60 images); epochs/steps/batch of
# the classifier; head_*: the Siamese head; sample: test images compared (t-SNE, metrics), searched
# among all the (kept) training images. The default's settings were chosen on the validation split
# (benchmarks/results/densenet_fashion_mnist.json has the test figures).
_DENSENET = {
    "smoke": dict(
        classifier="densenet_bc_fashion_small",
        train=300,
        val=100,
        test=200,
        epochs=1,
        steps_per_epoch=2,
        batch_size=40,
        head_epochs=1,
        head_steps=2,
        head_batch=64,
        sample=200,
        tsne_iter=500,
    ),
    "default": dict(
        classifier="densenet_bc_fashion_small",
        train=12000,
        val=300,
        test=500,
        epochs=6,
        steps_per_epoch=50,
        batch_size=120,
        head_epochs=3,
        head_steps=30,
        head_batch=128,
        sample=400,
        tsne_iter=500,
    ),
    "full": dict(
        classifier="densenet_bc_fashion",
        train=None,
        val=None,
        test=None,
        epochs=30,
        steps_per_epoch=421,
        batch_size=128,
        head_epochs=10,
        head_steps=100,
        head_batch=256,
        sample=3000,
        tsne_iter=1000,
    ),
}

# notebook 10: train / val / test: Fashion-MNIST images of the official split kept (None = all);
# anomalies: MNIST images (the embedded set's splits together); epochs x steps x batch of the VICReg
# and the ablation (nn_epochs: the neighbour model); sample: test images in the t-SNE and clustering
# figures; spectral: training images in the Laplacian eigenmaps graph (with the test images).
_VICREG = {
    "smoke": dict(
        train=400,
        val=128,
        test=300,
        anomalies=300,
        epochs=1,
        ablation_epochs=1,
        nn_epochs=1,
        steps_per_epoch=2,
        batch_size=64,
        sample=300,
        spectral=400,
        tsne_iter=250,
    ),
    "default": dict(
        train=3000,
        val=256,
        test=1000,
        anomalies=1000,
        epochs=6,
        ablation_epochs=6,
        nn_epochs=3,
        steps_per_epoch=12,
        batch_size=128,
        sample=1000,
        spectral=3000,
        tsne_iter=500,
    ),
    "full": dict(
        train=None,
        val=None,
        test=None,
        anomalies=5000,
        epochs=100,
        ablation_epochs=100,
        nn_epochs=50,
        steps_per_epoch=210,
        batch_size=256,
        sample=3000,
        spectral=12000,
        tsne_iter=1000,
    ),
}

#: ``{notebook: {profile: settings}}``. ``models``: a list of registry names, None for all of them.
NOTEBOOKS: dict[str, dict[str, dict]] = {
    "01_data": _suite(_DATA),
    "02_generators": _suite(_DATA, examples_per_batch=16),  # images per generated batch shown
    "03_architectures": _suite(models=None),
    "04_training": _suite(
        (*_DATA, *_BUDGET, "augment", "train_processes"),
        models=None,
    ),
    "05_evaluation": _suite((*_DATA, "umap_points", "projection"), models=None),
    "06_kernel_visualization": _suite((*_DATA, "n_trials", "filters_per_layer", "ascent_steps"), models=None),
    "07_search_and_applications": _suite(
        (*_DATA, *_BUDGET),
        target_far=0.01,  # every threshold's operating point: 1 % of impostors accepted
        # n_pairs: genuine (and as many impostor) pairs per split; episodes: seeded gallery draws
        by_profile={
            "smoke": {"n_pairs": 500, "episodes": 2},
            "default": {"n_pairs": 5000, "episodes": 10},
            "full": {"n_pairs": 5000, "episodes": 10},
        },
    ),
    "08_densenet_fashion_mnist": _suite(seed=42, force=False, by_profile=_DENSENET),
    "09_contrastive_4_vs_9": _suite(("source", "seed", *_BUDGET)),
    "10_vicreg": _suite(("source", "seed", "force"), by_profile=_VICREG),
}


def _entry(notebook: str) -> dict[str, dict]:
    if notebook not in NOTEBOOKS:
        raise ProfileError(
            f"no settings for notebook {notebook!r}; add its entry to helpers/profiles.py NOTEBOOKS "
            f"(known: {', '.join(NOTEBOOKS)})"
        )
    return NOTEBOOKS[notebook]


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
