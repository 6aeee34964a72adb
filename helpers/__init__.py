"""Metric-learning experiment suite: data, augmentation, samplers, losses, the model registry, training, evaluation.

Every module is backend-agnostic (``keras.ops``); TensorFlow- or JAX-specific code lives
only in clearly named shims (``helpers/explain.py``'s gradient shim, ``helpers/training/``'s
distribution helper and its TensorBoard logs, written on TensorFlow only).

``import helpers`` is enough for ``keras.models.load_model`` to read a model this suite saved
(``<name>.keras``, see :func:`helpers.export`): the suite's layers and losses are registered with
Keras as soon as Keras is imported, before or after ``helpers``, without importing Keras here.
"""

import importlib.abc
import importlib.util
import os
import sys

# FAISS (helpers.knn) and scikit-learn compute on OpenMP threads, which busy-wait between parallel
# regions by default: on shared or busy cores a spinning thread takes the core from the one doing the
# work (benchmarks/archive/results/mining_omp_active.json against mining.json). Wait passively instead; it must
# be set before either library loads OpenMP, and a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# the modules whose import registers the suite's Keras layers and losses; they import only Keras, so
# registering them while Keras finishes its import cannot meet a half-imported module of the suite
_REGISTERING_MODULES = ("helpers.layers", "helpers.losses")


def _register_keras_objects() -> None:
    for module in _REGISTERING_MODULES:
        importlib.import_module(module)


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Import hook: once the ``keras`` package has finished importing, register the suite's objects.

    Importing Keras takes seconds (TensorFlow starts), so ``import helpers`` does not; the command
    lines that never need Keras (the runner, argument checks) stay fast.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)  # once, and the real finders locate keras
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register_keras_objects()

        spec.loader.exec_module = exec_then_register
        return spec


if "keras" in sys.modules:
    _register_keras_objects()
elif not any(isinstance(finder, _RegisterAfterKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())


def export(name, folder, **kwargs):
    """Write the cached model ``name`` to ``folder/<name>.keras`` with its card; see
    :func:`helpers.export.export`."""
    from helpers.export import export as _export

    return _export(name, folder, **kwargs)
