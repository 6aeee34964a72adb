"""The studies' own figures, one module per study (``helpers.plots`` holds the figures any notebook
draws). Each function returns a matplotlib Figure; ``helpers.config.save_figure`` writes it."""

import helpers.plots  # noqa: F401  (chooses the headless backend before a study module imports pyplot)
