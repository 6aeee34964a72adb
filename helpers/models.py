"""The six embedding architectures and the one registry that names them.

``MODELS[name]`` holds everything the rest of the suite needs to know about a model: its builder,
the loss and its parameters, which generator feeds it, and its training hyperparameters. Notebooks,
benchmarks and tests loop over the registry; a model name is spelled once, here.

Every builder returns a ``keras.Model`` from images to an embedding. ``build_training_model`` wraps
it for the model's loss: pairs and triplets share the embedding weights (a Siamese network), and the
wrapped output stacks the embeddings as ``(batch, n_inputs, dim)`` for the losses of
``helpers.losses``.

What changed from the reference project (whose attention models reached only 0.34-0.75 3-NN
accuracy in its README), keeping each model's identity (layers, loss family, margin where the
embedding is not normalised); notebook 03 tells the story with the measured effects:

- BatchNormalization after the pooling of each convolutional stage (momentum 0.9, for short budgets)
  and LayerNormalization in attention blocks.
- A convolutional stem turns the image into 7x7 tokens for the attention models.
- AdamW at 1e-3 for the attention models; Adam 1e-3 for the CNNs.
- P x K batches with the loss over every triplet / pair of the batch (or the semi-hard triplets)
  for cnn_simple_v1, cnn_simple_v2, cnn_with_attention_v1 and the ViT-style model.
- Models trained on L2-normalised embeddings end with an ``L2Normalize`` layer, so the embedding a
  user retrieves with is the one the loss saw.
- Every model trains on augmented batches; the CNNs on a cosine learning-rate schedule; the CBAM
  model's semi-hard triplet loss adds a center-regularisation pull inside each class.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import keras
from keras import layers, ops

from helpers import generators
from helpers.layers import (  # noqa: F401 - the layers models are built from, importable from here too
    ClassToken,
    L2Normalize,
    PositionEmbedding,
    SpatialAttention,
    StackEmbeddings,
    TakeToken,
)

EMBEDDING_DIM = 64
AUGMENT_MODES = (False, True, "host", "device")
# generator kinds added by study modules (name -> GeneratorKind, see register_generator); the core
# kinds are helpers.generators.GENERATORS
GENERATOR_KINDS: dict[str, GeneratorKind] = {}
# Keras' default 0.99 needs hundreds of steps before the moving statistics used at inference
# match the batches; our budgets are a few hundred steps, and with 0.99 the validation loss of
# the early epochs measured a mis-normalised network (ReduceLROnPlateau then cut the rate).
BN_MOMENTUM = 0.9


# --- custom layers (keras.ops only, so they run on every backend) ---------------------------------


def rotation_shift_transforms(theta, dy, dx, height: int, width: int):
    """(batch, 8) transforms for ``keras.ops.image.affine_transform``: rotation by ``theta`` (radians)
    about the image centre, then a shift by ``(dy, dx)`` pixels — the inverse map of
    :class:`helpers.generators.Augmenter` (output pixel -> source pixel)."""
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    cos, sin = ops.cos(theta), ops.sin(theta)
    # source x = cos (x - cx - dx) + sin (y - cy - dy) + cx; source y = -sin (...) + cos (...) + cy
    a2 = cx - cos * (cx + dx) - sin * (cy + dy)
    b2 = cy + sin * (cx + dx) - cos * (cy + dy)
    zeros = ops.zeros_like(cos)
    return ops.stack([cos, sin, a2, -sin, cos, b2, zeros, zeros], axis=1)


def _bilinear_sample(images, sy, sx, height: int, width: int, channels: int):
    """``keras.ops`` twin of :func:`helpers.generators._bilinear_sample` (the host augmenter's numpy
    one): sample ``images`` (b, h, w, c) at source coordinates ``sy``, ``sx`` (b, h, w), zero
    outside, as four gathers from the batch flattened with a one-pixel zero border. Gathers, unlike
    ``ops.image.map_coordinates``, take a batch whose size is unknown while a graph is traced."""
    padded = ops.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
    flat = ops.reshape(padded, (-1, channels))
    y0, x0 = ops.floor(sy), ops.floor(sx)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    y0, x0 = ops.cast(y0, "int32"), ops.cast(x0, "int32")
    base = (ops.arange(ops.shape(images)[0], dtype="int32") * (height + 2) * (width + 2))[:, None, None]
    rows = [base + (ops.clip(y0 + d, -1, height) + 1) * (width + 2) for d in (0, 1)]
    cols = [ops.clip(x0 + d, -1, width) + 1 for d in (0, 1)]
    tap = [[ops.take(flat, r + c, axis=0) for c in cols] for r in rows]
    top = tap[0][0] * (1 - wx) + tap[0][1] * wx
    bottom = tap[1][0] * (1 - wx) + tap[1][1] * wx
    return top * (1 - wy) + bottom * wy


@keras.saving.register_keras_serializable(package="helpers")
class DeviceAugment(layers.Layer):
    """The generators' augmentation (shift, rotation, gaussian noise) inside the training graph.

    Same distribution as :class:`helpers.generators.Augmenter` (uniform shift in ``[-shift, shift]``
    pixels per axis, rotation in ``[-rotation, rotation]`` degrees about the centre, bilinear with zero
    fill, noise of standard deviation ``noise``, clipped to [0, 1]), but drawn with ``keras.random``
    and applied by ``keras.ops.image.affine_transform`` on the accelerator, so a GPU is not kept
    waiting by a numpy augmenter in one host thread. Active only when ``training=True``; the
    embedding model a user embeds with never contains it. ``ModelSpec.augment="device"`` selects it.
    """

    def __init__(
        self,
        shift: float = 2,
        rotation: float = 10,
        noise: float = 0.05,
        elastic: float = 0.0,
        elastic_grid: int = 4,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        generators.Augmenter(shift, rotation, noise, elastic, elastic_grid)  # one check of the values
        self.shift, self.rotation, self.noise = float(shift), float(rotation), float(noise)
        self.elastic, self.elastic_grid = float(elastic), int(elastic_grid)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def transforms(self, batch: int, height: int, width: int):
        """(batch, 8) projective transforms mapping output pixels to source pixels."""
        theta = keras.random.uniform((batch,), -self.rotation, self.rotation, seed=self.seed_generator)
        theta = theta * (3.141592653589793 / 180.0)
        dy = keras.random.uniform((batch,), -self.shift, self.shift, seed=self.seed_generator)
        dx = keras.random.uniform((batch,), -self.shift, self.shift, seed=self.seed_generator)
        return rotation_shift_transforms(theta, dy, dx, height, width)

    def call(self, images, training=None):
        if not training:
            return images
        shape = ops.shape(images)
        out = images
        if self.elastic > 0:  # a displacement field is no affine map: sample every pixel's source
            out = self._warp_elastic(out, shape[0], images.shape[1], images.shape[2], images.shape[3])
        elif self.shift > 0 or self.rotation > 0:
            out = ops.image.affine_transform(
                out,
                self.transforms(shape[0], images.shape[1], images.shape[2]),
                interpolation="bilinear",
                fill_mode="constant",
                fill_value=0,
                data_format="channels_last",
            )
        if self.noise > 0:
            out = out + self.noise * keras.random.normal(shape, seed=self.seed_generator, dtype=out.dtype)
        return ops.clip(out, 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def _warp_elastic(self, images, batch, height: int, width: int, channels: int):
        """Rotation, shift and the elastic field of :class:`helpers.generators.Augmenter`, bilinear
        with zero fill (:func:`_bilinear_sample`) over the whole batch."""
        t = self.transforms(batch, height, width)
        yy, xx = ops.meshgrid(
            ops.arange(height, dtype="float32"), ops.arange(width, dtype="float32"), indexing="ij"
        )
        # projective rows (a0 a1 a2 / b0 b1 b2) with c0 = c1 = 0: source = A [x, y, 1]
        sx = t[:, 0, None, None] * xx + t[:, 1, None, None] * yy + t[:, 2, None, None]
        sy = t[:, 3, None, None] * xx + t[:, 4, None, None] * yy + t[:, 5, None, None]
        grid = self.elastic_grid
        coarse = self.elastic * keras.random.normal((2, batch, grid, grid), seed=self.seed_generator)
        rows = ops.convert_to_tensor(generators.interpolation_matrix(height, grid))
        cols = ops.convert_to_tensor(generators.interpolation_matrix(width, grid))
        field = ops.einsum("hi,abij,wj->abhw", rows, coarse, cols)
        return _bilinear_sample(images, sy + field[0], sx + field[1], height, width, channels)

    def get_config(self):
        return {
            **super().get_config(),
            "shift": self.shift,
            "rotation": self.rotation,
            "noise": self.noise,
            "elastic": self.elastic,
            "elastic_grid": self.elastic_grid,
            "seed": self.seed,
        }


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
    outputs = layers.Dense(embedding_dim, name="embedding")(x)
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
    outputs = layers.Dense(embedding_dim, name="embedding")(x)
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
    outputs = layers.Dense(embedding_dim, name="embedding")(cls)
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


# --- what a registry entry can name ---------------------------------------------------------------

#: ``ModelSpec.loss`` -> (``helpers.losses.LOSSES`` name, the constructor arguments the spec decides
#: beyond ``margin``). The ``_cls`` losses also train a softmax class head on the anchor's embedding
#: with cross-entropy, weighted ``triplet_weight`` / ``cls_weight``.
LOSS_SETTINGS: dict[str, tuple[str, Callable[..., dict]]] = {
    "contrastive": ("contrastive", lambda s: {}),
    "triplet": ("triplet", lambda s: {"variant": "l2" if s.l2_normalized else "plain"}),
    "batch_hard_triplet": ("batch_hard_triplet", lambda s: {}),
    "batch_semi_hard_triplet": (
        "batch_semi_hard_triplet",
        lambda s: {"center_reg_weight": s.center_reg_weight},
    ),
    "batch_all_triplet": ("batch_all_triplet", lambda s: {"squared": not s.l2_normalized}),
    "batch_contrastive": ("batch_contrastive", lambda s: {}),
    "triplet_l2_cls": ("triplet", lambda s: {"variant": "l2_safe"}),
    "triplet_center_cls": (
        "triplet",
        lambda s: {"variant": "center", "center_reg_weight": s.center_reg_weight},
    ),
    # a study spec (helpers.studies.contrastive_4_vs_9) adds the ``near_margin`` field
    "graded_contrastive": ("graded_contrastive", lambda s: {"near_margin": _near_margin(s)}),
    # a study spec (helpers.studies.vicreg) adds the weights λ, μ, ν of the three terms
    "vicreg": ("vicreg", lambda s: _vicreg_weights(s)),
}
CLASS_HEAD_LOSSES = ("triplet_l2_cls", "triplet_center_cls")


def _near_margin(spec) -> float:
    near = getattr(spec, "near_margin", None)
    if near is None:
        raise ValueError(f"model {spec.name!r}: loss 'graded_contrastive' needs a spec with a near_margin")
    return near


def _vicreg_weights(spec) -> dict:
    fields = ("inv_weight", "var_weight", "cov_weight")
    if not all(hasattr(spec, f) for f in fields):
        raise ValueError(f"model {spec.name!r}: loss 'vicreg' needs a spec with {', '.join(fields)}")
    return {f: getattr(spec, f) for f in fields}


#: ``ModelSpec.loss`` of plain classifiers (trained on labelled P x K batches, no metric loss).
CLASSIFIER_LOSSES: dict[str, Callable[[], keras.losses.Loss]] = {
    "cross_entropy": keras.losses.SparseCategoricalCrossentropy,
}

#: ``ModelSpec.optimizer`` -> the Keras optimizer built with a learning rate (or schedule).
OPTIMIZERS: dict[str, Callable[..., keras.optimizers.Optimizer]] = {
    "adam": lambda lr, spec, **ema: keras.optimizers.Adam(learning_rate=lr, **ema),
    "adamw": lambda lr, spec, **ema: keras.optimizers.AdamW(
        learning_rate=lr, weight_decay=spec.weight_decay, **ema
    ),
}

#: ``ModelSpec.lr_schedule``: Keras' ReduceLROnPlateau callback, or a cosine decay in the optimizer.
LR_SCHEDULES = ("plateau", "cosine")


def _alternatives(valid) -> str:
    quoted = [repr(v) for v in valid]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


# --- study architectures (registered by their study modules, e.g. helpers.studies.densenet_fashion_mnist) ----------


def _dense_layer(x, growth_rate, dropout, name):
    """DenseNet-BC bottleneck: BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k)-Dropout, concatenated to ``x``."""
    he = keras.initializers.HeNormal()
    h = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn1")(x)
    h = layers.Activation("relu", name=f"{name}_relu1")(h)
    h = layers.Conv2D(4 * growth_rate, 1, use_bias=False, kernel_initializer=he, name=f"{name}_conv1")(h)
    h = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn2")(h)
    h = layers.Activation("relu", name=f"{name}_relu2")(h)
    h = layers.Conv2D(
        growth_rate, 3, padding="same", use_bias=False, kernel_initializer=he, name=f"{name}_conv2"
    )(h)
    if dropout:
        h = layers.Dropout(dropout, name=f"{name}_drop")(h)
    return layers.Concatenate(name=f"{name}_concat")([x, h])


def densenet_bc(
    input_shape=(28, 28, 1),
    embedding_dim=None,
    growth_rate=12,
    blocks=(6, 12, 8),
    initial_channels=24,
    compression=0.5,
    dropout=0.2,
    stem_pool=False,
):
    """DenseNet-BC for small grey images, the reference's architecture; returns images -> ``features``.

    Inputs in [0, 1] are mapped to [-1, 1] inside the model (``Rescaling``), so augmentation and the
    data stay in [0, 1]. A 3x3 convolution to ``initial_channels``; dense blocks of ``blocks``
    bottleneck layers of growth rate ``growth_rate``; between blocks a transition (BN-ReLU-Conv1x1
    with ``compression`` of the channels, 2x2 average pooling); then BN-ReLU and global average
    pooling: the ``features`` vector (192-d for the defaults). He initialisation; BatchNormalization
    momentum 0.9 (PyTorch's default 0.1 in its convention, as the reference). The 10-class
    softmax is the ``class_head`` that ``build_training_model`` adds for ``loss="cross_entropy"``.
    ``embedding_dim`` is accepted for the registry's builder signature and must be None or the
    computed feature size.
    """
    he = keras.initializers.HeNormal()
    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(inputs)
    x = layers.Conv2D(
        initial_channels, 3, padding="same", use_bias=False, kernel_initializer=he, name="stem_conv"
    )(x)
    if stem_pool:  # the smaller variant: the dense blocks start at half the resolution
        x = layers.MaxPooling2D(pool_size=2, name="stem_pool")(x)
    for b, n_layers in enumerate(blocks, start=1):
        for i in range(1, n_layers + 1):
            x = _dense_layer(x, growth_rate, dropout, name=f"block{b}_layer{i}")
        if b < len(blocks):
            channels = int(x.shape[-1] * compression)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"transition{b}_bn")(x)
            x = layers.Activation("relu", name=f"transition{b}_relu")(x)
            x = layers.Conv2D(channels, 1, use_bias=False, kernel_initializer=he, name=f"transition{b}_conv")(
                x
            )
            x = layers.AveragePooling2D(pool_size=2, name=f"transition{b}_pool")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="final_bn")(x)
    x = layers.Activation("relu", name="final_relu")(x)
    features = layers.GlobalAveragePooling2D(name="features")(x)
    if embedding_dim is not None and embedding_dim != features.shape[-1]:
        raise ValueError(
            f"densenet_bc computes {features.shape[-1]}-d features with these settings, "
            f"not embedding_dim={embedding_dim}; register it with embedding_dim={features.shape[-1]}"
        )
    return keras.Model(inputs, features, name="densenet_bc")


def siamese_head(input_shape=(192,), embedding_dim=128):
    """The Siamese head on frozen backbone features: Dense(128)-ReLU-Dense(128) (L2-normalised by the
    registry when ``l2_normalized=True``). Its input is a feature vector, not an image."""
    inputs = keras.Input(input_shape, name="features")
    x = layers.Dense(embedding_dim, activation="relu", name="head_dense1")(inputs)
    outputs = layers.Dense(embedding_dim, name="embedding")(x)
    return keras.Model(inputs, outputs, name="siamese_head")


# --- the registry ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the suite knows about one model.

    Every name is checked against its registry when the spec is built (a typo fails at once with
    the valid names): ``generator`` a key of ``helpers.generators.GENERATORS`` (``"pairs"``,
    ``"triplets"``, ``"triplets_cls"``, or ``"pk"``: P classes x K images for online mining,
    ``batch_size`` is then P x K); ``loss`` a key of :data:`LOSS_SETTINGS` (``"batch_all_triplet"`` /
    ``"batch_contrastive"``: every triplet / pair of a P x K batch; the ``_cls`` losses add a class
    head; :data:`CLASSIFIER_LOSSES` ``"cross_entropy"``: a plain softmax classifier on ``"pk"``
    batches, a class head on top of the embedding, which is then its penultimate layer); ``mining``
    one of ``helpers.generators.MINING`` ("random", "hard", "semi-hard": negatives
    of pair/triplet generators in the model's own embedding space, refreshed every epoch);
    ``optimizer`` a key of :data:`OPTIMIZERS`; ``lr_schedule`` one of :data:`LR_SCHEDULES`
    (``"plateau"``: Keras' ReduceLROnPlateau, as the reference; ``"cosine"``: cosine decay to 1% over
    the run's steps). ``augment`` applies the generators' small shifts, rotations and noise to the
    training batches: ``True`` / ``"host"`` in the generator (numpy), ``"device"`` in the training
    graph (:class:`DeviceAugment`, for accelerators); ``augment_params`` replaces the default strengths
    of either (``shift``, ``rotation``, ``noise``, ``elastic``, ``elastic_grid``).
    ``weight_ema`` (0: off) is the momentum of an exponential moving average of the trainable weights
    (Keras' ``use_ema``), which replaces the weights at the end of every epoch, so validation, the
    best-epoch checkpoint and the saved model all see the averaged weights.
    ``recalibrate_bn`` recomputes the BatchNormalization statistics on the clean training images
    after training (:func:`helpers.training.recalibrate_batchnorm`): the moving averages otherwise
    describe augmented batches.
    The study fields (``monitor``, ``plateau_factor``, ``plateau_patience``, ``weight_decay``,
    ``augment_params``) serve the studies' classifiers; at their defaults they, and ``recalibrate_bn``,
    leave the models' fingerprints unchanged.
    """

    name: str
    builder: Callable[..., keras.Model]
    loss: str
    margin: float
    generator: str
    description: str
    epochs: int
    steps_per_epoch: int
    batch_size: int = 128
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    l2_normalized: bool = False
    triplet_weight: float = 1.0
    cls_weight: float = 0.0
    center_reg_weight: float = 0.0
    embedding_dim: int = EMBEDDING_DIM
    mining: str = "random"
    classes_per_batch: int = 10
    augment: bool | str = False
    lr_schedule: str = "plateau"
    monitor: str = "val_loss"
    plateau_factor: float = 0.1
    plateau_patience: int = 3
    weight_decay: float = 1e-4
    augment_params: dict | None = None
    recalibrate_bn: bool = False
    weight_ema: float = 0.0

    @property
    def monitor_mode(self) -> str:
        """``"max"`` for an accuracy monitor, ``"min"`` for a loss."""
        return "max" if "accuracy" in self.monitor else "min"

    @property
    def augment_on_host(self) -> bool:
        """Whether the generator augments the batches (numpy, ``True`` or ``"host"``)."""
        return self.augment in (True, "host")

    def __post_init__(self):
        """Check every name the spec holds against its registry, so a typo fails here at once."""
        choices = {
            "loss": {**LOSS_SETTINGS, **CLASSIFIER_LOSSES},
            "generator": {**generators.GENERATORS, **GENERATOR_KINDS},
            "mining": generators.MINING,
            "optimizer": OPTIMIZERS,
            "lr_schedule": LR_SCHEDULES,
            "augment": AUGMENT_MODES,
        }
        for field, valid in choices.items():
            value = getattr(self, field)
            if value not in valid:
                raise ValueError(
                    f"model {self.name!r}: {field} must be {_alternatives(list(valid))}, got {value!r}"
                )
        if not 0.0 <= self.weight_ema < 1.0:
            raise ValueError(
                f"weight_ema must be in [0, 1) (0: no weight averaging), got {self.weight_ema!r}"
            )
        if self.monitor not in ("val_loss", "val_accuracy"):
            raise ValueError(f"monitor must be 'val_loss' or 'val_accuracy', got {self.monitor!r}")
        if self.monitor == "val_accuracy" and self.loss != "cross_entropy":
            raise ValueError(
                "monitor='val_accuracy' needs loss='cross_entropy' (the only model with an accuracy metric)"
            )

    def config(self) -> dict:
        """A JSON-able view of the spec (the builder by name), used in cache fingerprints."""
        out = dataclasses.asdict(self)
        out["builder"] = self.builder.__name__
        # where the augmentation runs (numpy in the generator or a layer on the device) is an
        # execution detail, like the generator's workers: the same draws' distribution, one entry
        out["augment"] = bool(self.augment)
        for f in dataclasses.fields(self):  # these fields at their defaults: fingerprints unchanged
            if f.name in _OMITTED_AT_DEFAULT and out[f.name] == f.default:
                del out[f.name]
        return out


_STUDY_FIELDS = ("monitor", "plateau_factor", "plateau_patience", "weight_decay", "augment_params")
#: fields a cache fingerprint leaves out while they hold their defaults: adding one kept every older
#: entry's fingerprint (the study fields, and recalibrate_bn, which CBAM sets)
_OMITTED_AT_DEFAULT = (*_STUDY_FIELDS, "recalibrate_bn", "weight_ema")


# Budgets: the training seconds of each model on 2 CPU cores are in benchmarks/results/quality.json
# (train_seconds) and the suite's in suite_time.json. Every model trains on augmented batches
# (shifts, rotations, noise): 3,000 training images are few. benchmarks/quality.py measures these
# settings over split and weight seeds; benchmarks/quality_studies.py holds the studies that chose them.
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "cnn_simple_v1",
            cnn_simple_v1,
            loss="batch_contrastive",
            margin=10.0,
            generator="pk",
            description="Siamese CNN, contrastive loss over every pair of P x K batches",
            epochs=6,
            steps_per_epoch=100,
            batch_size=320,
            augment=True,
            lr_schedule="cosine",
            # BatchNorm statistics recomputed on the clean training images, as CBAM: on the validation
            # split the same weights gain silhouette +0.015 and MAP@R +0.0065 on each of split seeds
            # 1-3, 3-NN +0.0007 (benchmarks/results/bn_recalibration_cnn_simple_v1.json)
            recalibrate_bn=True,
        ),
        ModelSpec(
            "cnn_simple_v2",
            cnn_simple_v2,
            loss="batch_all_triplet",
            margin=10.0,
            generator="pk",
            description="wider ELU CNN, triplet loss (squared distances) over every triplet of P x K batches",
            epochs=6,
            steps_per_epoch=30,
            batch_size=320,
            augment=True,
            lr_schedule="cosine",
        ),
        ModelSpec(
            "cnn_with_attention_v1",
            cnn_with_attention_v1,
            loss="batch_semi_hard_triplet",
            # margin 1.0, learning rate 2e-3 and 1440 steps, not 0.5 / 1e-3 / 720: the loss was still
            # falling when the cosine schedule ended; validation silhouette 0.712 -> 0.833, 3-NN
            # 0.985 -> 0.988 on split seed 1 (benchmarks/quality_studies.py cbam_margin_1_lr_2e-3_1440)
            margin=1.0,
            generator="pk",
            l2_normalized=True,
            center_reg_weight=5.0,
            description="CNN with CBAM attention, semi-hard triplet loss + center regularisation on "
            "L2-normalised embeddings",
            epochs=6,
            steps_per_epoch=240,
            learning_rate=2e-3,
            batch_size=320,
            augment=True,
            lr_schedule="cosine",
            # BatchNorm statistics recomputed on the clean training images after training: the same
            # weights score validation 3-NN +0.0017 (+0.003, +0.002, 0 on split seeds 1-3), MAP@R
            # +0.0020 and silhouette +0.004 (benchmarks/results/bn_recalibration.json)
            recalibrate_bn=True,
        ),
        ModelSpec(
            "cnn_with_attention_cls_head_v1",
            cnn_with_attention_cls_head_v1,
            loss="triplet_l2_cls",
            margin=1.0,
            generator="triplets_cls",
            description="CNN tokens + CLS + attention, L2 triplet + class head (0.5 / 1.0)",
            epochs=6,
            # semi-hard negatives mined in its own embedding each epoch (chosen on the validation
            # split, benchmarks/quality_studies.py); 8 fewer steps an epoch pay for the re-embedding
            steps_per_epoch=72,
            mining="semi-hard",
            batch_size=128,
            learning_rate=1e-3,
            optimizer="adamw",
            l2_normalized=True,
            triplet_weight=0.5,
            cls_weight=1.0,
            augment=True,
        ),
        ModelSpec(
            "cnn_with_attention_cls_head_v2",
            cnn_with_attention_cls_head_v2,
            loss="triplet_center_cls",
            margin=1.5,
            generator="triplets_cls",
            description="as v1 with center-regularised L2 triplet + class head (1.0 / 1.0)",
            epochs=6,
            # semi-hard mining as class-head v1 (chosen on the validation split, quality_studies.py)
            steps_per_epoch=112,
            mining="semi-hard",
            batch_size=128,
            learning_rate=1e-3,
            optimizer="adamw",
            l2_normalized=True,
            triplet_weight=1.0,
            cls_weight=1.0,
            center_reg_weight=0.05,
            augment=True,
        ),
        ModelSpec(
            "cnn_with_attention_vit_style_v1",
            cnn_with_attention_vit_style_v1,
            loss="batch_contrastive",
            margin=10.0,
            generator="pk",
            description="ViT-style, two attention blocks, contrastive loss over every pair of P x K batches",
            epochs=6,
            # 960 steps, not 480: validation 3-NN over split seeds 1 and 2 0.971 -> 0.974, silhouette
            # 0.829 -> 0.862 (benchmarks/quality_studies.py vit, vit_720, vit_960)
            steps_per_epoch=160,
            batch_size=320,
            learning_rate=1e-3,
            optimizer="adamw",
            augment=True,
        ),
    ]
}


# Models of the studies and applications (notebooks 07+): trained and cached through the same
# ``helpers.training.train`` path, but not part of the six that notebooks 03-06, the benchmarks and
# the tests loop over. A study module registers its entries with :func:`register` when imported.
STUDY_MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a study model to ``STUDY_MODELS`` (idempotent for the same spec) and return it."""
    if spec.name in MODELS:
        raise ValueError(f"{spec.name!r} is one of the six core models; give the study model another name")
    known = STUDY_MODELS.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"a different study model is already registered as {spec.name!r}")
    STUDY_MODELS[spec.name] = spec
    return spec


@dataclasses.dataclass(frozen=True)
class GeneratorKind:
    """A sampler that only a study uses: ``inputs`` images per example (2: pairs, 3: triplets) and
    ``factory(spec, x, y, batch_size, steps_per_epoch, seed, augment)`` returning the ``PyDataset``
    (``helpers.training.make_generators`` calls it for the training and the validation split)."""

    inputs: int
    factory: Callable


def register_generator(kind: str, inputs: int, factory: Callable) -> GeneratorKind:
    """Register a study's generator kind, so ``ModelSpec(generator=kind)`` trains through ``train``."""
    if kind in generators.GENERATORS:
        raise ValueError(f"{kind!r} is a core generator kind; give the study's sampler another name")
    if inputs not in (2, 3):
        raise ValueError(f"inputs must be 2 (pairs) or 3 (triplets), got {inputs!r}")
    entry = GeneratorKind(int(inputs), factory)
    GENERATOR_KINDS[kind] = entry
    return entry


@contextlib.contextmanager
def spec_override(name: str, **fields):
    """Replace fields of the registry entry ``name`` while the context is open (a profile's choice,
    e.g. ``augment="device"`` on an accelerator); the entry is restored afterwards."""
    registry = MODELS if name in MODELS else STUDY_MODELS
    original = get_spec(name)
    registry[name] = dataclasses.replace(original, **fields)
    try:
        yield registry[name]
    finally:
        registry[name] = original


def get_spec(name: str) -> ModelSpec:
    """Return the registry entry for ``name`` or raise one clear error listing the valid names."""
    spec = MODELS.get(name) or STUDY_MODELS.get(name)
    if spec is None:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join([*MODELS, *STUDY_MODELS])}")
    return spec


def build_embedding(name: str, input_shape=(28, 28, 1)) -> keras.Model:
    """Build the embedding model (images -> embedding) registered under ``name``."""
    spec = get_spec(name)
    model = spec.builder(input_shape=input_shape, embedding_dim=spec.embedding_dim)
    if spec.l2_normalized:  # the embedding a user retrieves with is the one the loss saw
        outputs = L2Normalize(name="l2_normalize")(model.output)
        model = keras.Model(model.input, outputs, name=model.name)
    return model


def make_loss(spec: ModelSpec):
    """The Keras loss (or losses) for ``spec`` and the ``loss_weights`` to compile with."""
    from helpers import losses

    if spec.loss in CLASSIFIER_LOSSES:  # a plain classifier: no margin, no mining
        return CLASSIFIER_LOSSES[spec.loss](), None
    name, arguments = LOSS_SETTINGS[spec.loss]
    loss = losses.get(name, margin=spec.margin, **arguments(spec))
    if spec.loss in CLASS_HEAD_LOSSES:
        cls = keras.losses.SparseCategoricalCrossentropy()
        return [loss, cls], [spec.triplet_weight, spec.cls_weight]
    return loss, None


def make_optimizer(
    spec: ModelSpec,
    learning_rate: float | None = None,
    total_steps: int | None = None,
    steps_per_epoch: int | None = None,
):
    """The optimizer of ``spec``; with ``lr_schedule="cosine"`` and ``total_steps`` its rate decays
    along a cosine from ``learning_rate`` to 1% of it over the whole run (step by step, so a resumed
    run, whose optimizer step count is restored, continues the same curve). With ``weight_ema`` it
    keeps a moving average of the weights and writes it into the model every ``steps_per_epoch``
    steps (the registry's when not given): at each epoch's end."""
    lr = spec.learning_rate if learning_rate is None else learning_rate
    if spec.lr_schedule == "cosine" and total_steps:
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=int(total_steps), alpha=0.01)
    ema = {}
    if spec.weight_ema:
        every = int(steps_per_epoch or spec.steps_per_epoch)
        ema = {"use_ema": True, "ema_momentum": spec.weight_ema, "ema_overwrite_frequency": every}
    return OPTIMIZERS[spec.optimizer](lr, spec, **ema)


def build_training_model(
    name: str, num_classes: int = 10, input_shape=(28, 28, 1), embedding: keras.Model | None = None
) -> tuple[keras.Model, keras.Model]:
    """Wrap the embedding of ``name`` for its loss; return ``(training_model, embedding_model)``.

    The training model takes 2 (pairs) or 3 (triplets) images through the *same* embedding model
    and outputs the stacked embeddings ``(batch, n, dim)``; a ``triplets_cls`` model also outputs
    class probabilities from a softmax head on the anchor's embedding.
    """
    spec = get_spec(name)
    if embedding is None:
        embedding = build_embedding(name, input_shape)
    augment = (
        DeviceAugment(name="device_augment", **(spec.augment_params or {}))
        if spec.augment == "device"
        else (lambda x: x)
    )
    if spec.generator == "pk":  # labelled batches: the loss mines triplets inside each batch
        images = keras.Input(input_shape, name="image")
        outputs = embedding(augment(images))
        if spec.loss in CLASSIFIER_LOSSES:  # a plain classifier: the embedding is its penultimate layer
            outputs = layers.Dense(num_classes, activation="softmax", name="class_head")(outputs)
        return keras.Model(images, outputs, name=f"{name}_training"), embedding
    kind = GENERATOR_KINDS.get(spec.generator)
    pairs = spec.generator == "pairs" or (kind is not None and kind.inputs == 2)
    roles = ["left", "right"] if pairs else ["anchor", "positive", "negative"]
    inputs = [keras.Input(input_shape, name=role) for role in roles]
    embeddings = [embedding(augment(x)) for x in inputs]
    stacked = StackEmbeddings(name="stacked_embeddings")(embeddings)
    outputs = [stacked]
    if spec.generator == "triplets_cls":
        outputs.append(layers.Dense(num_classes, activation="softmax", name="class_head")(embeddings[0]))
    model = keras.Model(inputs, outputs if len(outputs) > 1 else stacked, name=f"{name}_training")
    return model, embedding


def compile_training_model(
    model: keras.Model,
    name: str,
    learning_rate: float | None = None,
    total_steps: int | None = None,
    steps_per_epoch: int | None = None,
):
    """Compile ``model`` with the loss, loss weights and optimizer of the registry entry ``name``."""
    spec = get_spec(name)
    loss, weights = make_loss(spec)
    kwargs = {"loss_weights": weights} if weights is not None else {}
    if spec.loss == "cross_entropy":  # a classifier: val_accuracy for the monitor and the logs
        kwargs["metrics"] = ["accuracy"]
    elif spec.loss == "vicreg":  # its three terms, logged per batch and per epoch
        from helpers.losses import vicreg_metrics

        kwargs["metrics"] = vicreg_metrics()
    optimizer = make_optimizer(spec, learning_rate, total_steps, steps_per_epoch)
    model.compile(optimizer=optimizer, loss=loss, **kwargs)
    return model


def save_architecture_diagram(model: keras.Model, path) -> str | None:
    """Save ``keras.utils.plot_model`` of ``model`` to ``path`` (PNG, atomically).

    Returns the path, or None with a one-line message when graphviz (``dot``) or pydot is missing:
    the diagram is the only thing skipped.
    """
    import importlib.util
    import shutil

    from helpers.config import atomic_path, log_image

    if shutil.which("dot") is None or importlib.util.find_spec("pydot") is None:
        print(
            f"[{model.name}] architecture diagram skipped: graphviz 'dot' or pydot is missing "
            "(apt-get install graphviz; pip install pydot)"
        )
        return None
    with atomic_path(path, suffix=".png") as tmp:
        keras.utils.plot_model(
            model, to_file=str(tmp), show_shapes=True, show_layer_names=True, expand_nested=False, dpi=72
        )
    log_image(path)
    return str(path)


def describe(name: str) -> dict:
    """One row about the registry entry ``name`` for tables: loss, margin, generator, parameters."""
    spec = get_spec(name)
    model = build_embedding(name)
    return {
        "model": name,
        "generator": spec.generator,
        "loss": spec.loss,
        "margin": spec.margin,
        "l2_normalized": spec.l2_normalized,
        "embedding_size": spec.embedding_dim,
        "parameters": int(model.count_params()),
        "optimizer": spec.optimizer,
        "learning_rate": spec.learning_rate,
        "lr_schedule": spec.lr_schedule,
        "augment": spec.augment,
        "steps": spec.epochs * spec.steps_per_epoch,
        "batch_size": spec.batch_size,
    }
