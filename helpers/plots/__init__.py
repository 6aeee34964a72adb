"""Every figure of the suite, by topic. Each function returns a matplotlib Figure;
``helpers.config.save_figure`` writes it. Functions compute nothing beyond what they draw: metrics
come from ``helpers.evaluation``.

Topics: ``data`` (01), ``generators`` (02), ``training`` (04), ``latent_space`` (05), ``explain`` (06),
``applications`` (07), ``images`` (image grids); a new topic adds its own module here and
re-exports its public names below, so callers keep writing ``plots.plot_xxx``. A study's own
figures live with it, in ``helpers.studies.plots``.
"""

from __future__ import annotations

import matplotlib

if matplotlib.get_backend().lower() not in {"module://matplotlib_inline.backend_inline", "agg"}:
    # headless runs (papermill, CI) have no display; Jupyter keeps its inline backend
    try:
        matplotlib.use("Agg")
    except Exception:  # pragma: no cover - backend already fixed by the host
        pass

import matplotlib.pyplot as plt  # noqa: E402,F401  (tests close figures through plots.plt)

from helpers.plots.applications import (  # noqa: E402,F401
    plot_distance_histograms,
    plot_query_neighbours,
    plot_roc_curves,
)
from helpers.plots.data import plot_class_counts, plot_sample_grid  # noqa: E402,F401
from helpers.plots.explain import plot_feature_maps, plot_filter_images, plot_input_image  # noqa: E402,F401
from helpers.plots.generators import plot_pairs, plot_triplets, plot_triplets_cls  # noqa: E402,F401
from helpers.plots.images import plot_image_rows, plot_labelled_neighbours  # noqa: E402,F401
from helpers.plots.latent_space import plot_latent_grid, plot_latent_space, plot_metric_bars  # noqa: E402,F401
from helpers.plots.training import plot_histories, plot_history, small_multiples  # noqa: E402,F401
