"""Metric-learning experiment suite: data, generators, losses, models, training, evaluation.

Every module is backend-agnostic (``keras.ops``); TensorFlow- or JAX-specific code lives
only in clearly named shims (``helpers/explain.py``'s gradient shim, ``helpers/training.py``'s
distribution helper).
"""

import os

# FAISS (helpers.knn) and scikit-learn compute on OpenMP threads, which busy-wait between parallel
# regions by default: on shared or busy cores a spinning thread takes the core from the one doing the
# work (benchmarks/results/mining_omp_active.json against mining.json). Wait passively instead; it must
# be set before either library loads OpenMP, and a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
