"""Metric-learning experiment suite: data, generators, losses, models, training, evaluation.

Every module is backend-agnostic (``keras.ops``); TensorFlow- or JAX-specific code lives
only in clearly named shims (``helpers/explain.py``'s gradient shim, ``helpers/training.py``'s
distribution helper).
"""

__version__ = "0.1.0"
