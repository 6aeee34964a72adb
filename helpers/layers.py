"""The suite's Keras layers that embedding models are built from (``keras.ops`` only: every backend).

Each is registered with Keras (``helpers>Name``), so that ``keras.models.load_model`` reads a saved
embedding model once ``helpers`` is imported. This module imports Keras and the import-free
``helpers.studies`` package only, nothing else of the suite.
"""

from __future__ import annotations

import importlib

import keras
from keras import layers, ops

from helpers.studies import KERAS_OBJECTS


@keras.saving.register_keras_serializable(package="helpers")
class L2Normalize(layers.Layer):
    """Scale each embedding to unit Euclidean norm."""

    def call(self, x):
        return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))


@keras.saving.register_keras_serializable(package="helpers")
class StackEmbeddings(layers.Layer):
    """Stack n embeddings of shape (batch, d) into (batch, n, d) for the pair and triplet losses."""

    def call(self, inputs):
        return ops.stack(list(inputs), axis=1)


@keras.saving.register_keras_serializable(package="helpers")
class SpatialAttention(layers.Layer):
    """CBAM spatial attention: a 7x7 convolution over the channel-wise mean and max maps."""

    def __init__(self, kernel_size: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.conv = layers.Conv2D(1, kernel_size, padding="same", activation="sigmoid")

    def build(self, input_shape):
        self.conv.build((*input_shape[:-1], 2))

    def call(self, x):
        pooled = ops.concatenate(
            [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
        )
        return x * self.conv(pooled)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="helpers")
class ClassToken(layers.Layer):
    """Prepend one learned CLS token to a sequence of tokens (batch, n, d) -> (batch, n + 1, d)."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros", name="cls_token")

    def call(self, x):
        batch = ops.shape(x)[0]
        token = ops.broadcast_to(self.token, (batch, 1, ops.shape(self.token)[-1]))
        return ops.concatenate([ops.cast(token, x.dtype), x], axis=1)


@keras.saving.register_keras_serializable(package="helpers")
class PositionEmbedding(layers.Layer):
    """Add a learned positional encoding to a token sequence of fixed length."""

    def build(self, input_shape):
        self.positions = self.add_weight(
            shape=(1, input_shape[1], input_shape[2]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="positions",
        )

    def call(self, x):
        return x + ops.cast(self.positions, x.dtype)


@keras.saving.register_keras_serializable(package="helpers")
class TakeToken(layers.Layer):
    """Return token ``index`` of a sequence (batch, n, d) -> (batch, d)."""

    def __init__(self, index: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, x):
        return x[:, self.index, :]

    def get_config(self):
        return {**super().get_config(), "index": self.index}


# --- layers registered under their name, defined where more of the suite is imported ------------------

#: registered name -> the module that defines it: the in-graph augmenter lives beside the host one,
#: and the studies declare theirs in ``helpers.studies.KERAS_OBJECTS`` (the package's ``__init__``
#: imports nothing); Keras finds a stand-in under the name, which imports the module (registering the
#: real class) when a saved model holds the object
DEFERRED = {"helpers>DeviceAugment": "helpers.augment", **KERAS_OBJECTS}


class _Deferred:
    """Stand-in for a registered object: ``from_config`` imports its module, then builds the real one."""

    def __init__(self, registered: str, module: str):
        self.registered, self.module = registered, module

    def from_config(self, config):
        module = importlib.import_module(self.module)  # its decorator registers the real class too
        real = getattr(module, self.registered.split(">", 1)[1], None)
        if not isinstance(real, type):
            raise TypeError(f"{self.module} does not define the Keras object {self.registered!r}")
        return real.from_config(config)


def _register_deferred() -> None:
    objects = keras.saving.get_custom_objects()
    for registered, module in DEFERRED.items():
        objects.setdefault(registered, _Deferred(registered, module))


_register_deferred()
