"""The six core embedding backbones and the blocks they are built from.

Every builder takes ``(input_shape, embedding_dim)`` and returns a ``keras.Model`` from images to an
embedding; :mod:`helpers.registry` names them, with their losses and budgets, in ``MODELS``.

What changed from the reference project (whose attention models reached only 0.34-0.75 3-NN
accuracy in its README), keeping each model's identity (layers, loss family, margin where the
embedding is not normalised); notebook 03 tells the story with the measured effects:

- BatchNormalization after the pooling of each convolutional stage (momentum 0.9, for short budgets)
  and LayerNormalization in attention blocks.
- A convolutional stem turns the image into 7x7 tokens for the attention models.

The ``embedding`` layer computes in float32 under any dtype policy (Keras' advice for a mixed-precision
model's output layer), so a ``mixed_bfloat16`` model still returns float32 embeddings; under the
default float32 policy its configuration, and so the cache fingerprint, is what it was.
"""

from __future__ import annotations

import keras
from keras import layers

from helpers.layers import ClassToken, PositionEmbedding, SpatialAttention, TakeToken

EMBEDDING_DIM = 64
# Keras' default 0.99 needs hundreds of steps before the moving statistics used at inference
# match the batches; our budgets are a few hundred steps, and with 0.99 the validation loss of
# the early epochs measured a mis-normalised network (ReduceLROnPlateau then cut the rate).
BN_MOMENTUM = 0.9


# --- building blocks --------------------------------------------------------------------------------


def _cbam(x, ratio=8):
    """Convolutional Block Attention Module: channel squeeze-excitation, then spatial attention."""
    channels = x.shape[-1]
    squeeze = layers.GlobalAveragePooling2D()(x)
    squeeze = layers.Dense(max(channels // ratio, 4), activation="relu")(squeeze)
    excite = layers.Dense(channels, activation="sigmoid")(squeeze)
    x = layers.Multiply()([x, layers.Reshape((1, 1, channels))(excite)])
    return SpatialAttention(7)(x)


def _transformer_block(tokens, dim, heads=4, mlp_ratio=2, dropout=0.0):
    """Pre-norm transformer encoder block (LayerNorm -> MHA -> residual -> LayerNorm -> MLP -> residual)."""
    h = layers.LayerNormalization(epsilon=1e-6)(tokens)
    h = layers.MultiHeadAttention(num_heads=heads, key_dim=dim // heads, dropout=dropout)(h, h)
    tokens = layers.Add()([tokens, h])
    h = layers.LayerNormalization(epsilon=1e-6)(tokens)
    h = layers.Dense(dim * mlp_ratio, activation="gelu")(h)
    h = layers.Dense(dim)(h)
    return layers.Add()([tokens, h])


def _conv_stem_tokens(x, dim):
    """Convolutional stem: 28x28 image -> 7x7 grid of ``dim``-d tokens -> (batch, 49, dim)."""
    for i, filters in enumerate((32, dim), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stem_conv{i}")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.Activation("relu")(x)
    grid = x.shape[1] * x.shape[2]
    return layers.Reshape((grid, dim))(x)


# --- the six architectures -----------------------------------------------------------------------


def _conv_pool_bn(x, filters, activation, name):
    """Conv2D -> AvgPool2D, with BatchNormalization and the activation after the pooling.

    Normalising the pooled map touches a quarter of the positions that normalising the convolution's
    output would (``benchmarks/results/throughput.json`` has the training images/s of each model).
    """
    x = layers.Conv2D(filters, 3, padding="valid", use_bias=False, name=name)(x)
    x = layers.AveragePooling2D(pool_size=2)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return layers.Activation(activation)(x)


def _simple_cnn(name, filters, activation, input_shape, embedding_dim):
    inputs = keras.Input(input_shape, name="image")
    x = _conv_pool_bn(inputs, filters[0], activation, name="conv1")
    x = _conv_pool_bn(x, filters[1], activation, name="conv2")
    x = layers.Flatten()(x)
    outputs = layers.Dense(embedding_dim, name="embedding", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def cnn_simple_v1(input_shape=(28, 28, 1), embedding_dim=EMBEDDING_DIM):
    """Conv2D -> AvgPool2D -> Conv2D -> AvgPool2D -> Flatten -> Dense embedding (32 and 64 filters)."""
    return _simple_cnn("cnn_simple_v1", (32, 64), "relu", input_shape, embedding_dim)


def cnn_simple_v2(input_shape=(28, 28, 1), embedding_dim=EMBEDDING_DIM):
    """The shape of ``cnn_simple_v1`` with 128 and 256 filters and ELU activations."""
    return _simple_cnn("cnn_simple_v2", (128, 256), "elu", input_shape, embedding_dim)


def cnn_with_attention_v1(input_shape=(28, 28, 1), embedding_dim=EMBEDDING_DIM):
    """A three-stage CNN with a CBAM block (channel SE + spatial attention) after each stage.

    Each stage is Conv2D -> MaxPool -> BatchNorm -> ReLU -> CBAM: normalising and attending on the
    pooled map costs a quarter of doing it at full resolution.
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for stage, filters in enumerate((32, 64, 128), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{stage}")(x)
        if stage < 3:
            x = layers.MaxPooling2D(2)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.Activation("relu")(x)
        x = _cbam(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(embedding_dim, name="embedding", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="cnn_with_attention_v1")


def _cnn_tokens_attention(name, input_shape, embedding_dim, dim=64, blocks=1):
    inputs = keras.Input(input_shape, name="image")
    tokens = _conv_stem_tokens(inputs, dim)
    tokens = ClassToken()(tokens)
    tokens = PositionEmbedding()(tokens)
    for _ in range(blocks):
        tokens = _transformer_block(tokens, dim)
    tokens = layers.LayerNormalization(epsilon=1e-6)(tokens)
    cls = TakeToken(0)(tokens)
    outputs = layers.Dense(embedding_dim, name="embedding", dtype="float32")(cls)
    return keras.Model(inputs, outputs, name=name)


def cnn_with_attention_cls_head_v1(input_shape=(28, 28, 1), embedding_dim=EMBEDDING_DIM):
    """CNN features as 7x7 tokens + CLS token + learned positions + one multi-head attention block.

    The classification head is added by ``build_training_model`` on top of the embedding.
    """
    return _cnn_tokens_attention("cnn_with_attention_cls_head_v1", input_shape, embedding_dim)


def cnn_with_attention_cls_head_v2(input_shape=(28, 28, 1), embedding_dim=EMBEDDING_DIM):
    """The architecture of ``cnn_with_attention_cls_head_v1``; it differs by its loss."""
    return _cnn_tokens_attention("cnn_with_attention_cls_head_v2", input_shape, embedding_dim)


def cnn_with_attention_vit_style_v1(input_shape=(28, 28, 1), embedding_dim=EMBEDDING_DIM):
    """ViT-style: conv-stem tokens, CLS token, learned positions, two multi-head attention blocks."""
    return _cnn_tokens_attention("cnn_with_attention_vit_style_v1", input_shape, embedding_dim, blocks=2)
