"""The one registry of models: ``ModelSpec``, ``MODELS``, ``register``; building and compiling.

``MODELS[name]`` holds everything the rest of the suite needs to know about a core model: its
builder (:mod:`helpers.architectures`), the loss and its parameters, which sampler feeds it
(:mod:`helpers.samplers`), and its training hyperparameters. Notebooks, benchmarks and tests loop
over it; a model name is spelled once, here. A study registers its own entries with
:func:`register` (into ``STUDY_MODELS``, behind the same :func:`get_spec`), its losses with
:func:`register_loss` and its samplers with :func:`helpers.samplers.register_sampler`.

``build_training_model`` wraps an embedding for its loss: pairs and triplets share the embedding
weights (a Siamese network), and the wrapped output stacks the embeddings as ``(batch, n_inputs,
dim)`` for the losses of :mod:`helpers.losses`.

The recipe of the six, beyond their architectures:

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
from keras import layers

from helpers import losses, samplers
from helpers.architectures import (
    EMBEDDING_DIM,
    cnn_simple_v1,
    cnn_simple_v2,
    cnn_with_attention_cls_head_v1,
    cnn_with_attention_cls_head_v2,
    cnn_with_attention_v1,
    cnn_with_attention_vit_style_v1,
)
from helpers.augment import DeviceAugment
from helpers.layers import L2Normalize, StackEmbeddings
from helpers.samplers import GENERATOR_KINDS

AUGMENT_MODES = (False, True, "host", "device")


# --- what a registry entry can name ---------------------------------------------------------------


def _no_metrics(spec) -> list:
    return []


@dataclasses.dataclass(frozen=True)
class LossKind:
    """What ``ModelSpec.loss`` names: ``build(spec)`` returns the Keras loss with the arguments the
    spec decides, ``metrics(spec)`` the metrics compiled beside it. ``class_head``: the model also
    trains a softmax class head on the anchor's embedding with cross-entropy, weighted
    ``triplet_weight`` / ``cls_weight``; ``classifier``: a plain softmax classifier on ``"pk"``
    batches (a class head on top of the embedding, which is then its penultimate layer)."""

    build: Callable[..., keras.losses.Loss]
    metrics: Callable[..., list] = _no_metrics
    class_head: bool = False
    classifier: bool = False


#: ``ModelSpec.loss`` -> :class:`LossKind`; the core kinds below, a study's by :func:`register_loss`
LOSS_KINDS: dict[str, LossKind] = {}


def register_loss(
    kind: str,
    build: Callable[..., keras.losses.Loss],
    metrics: Callable[..., list] | None = None,
    class_head: bool = False,
    classifier: bool = False,
) -> LossKind:
    """Register ``kind`` for ``ModelSpec(loss=kind)``: ``build(spec)`` returns the loss (a study's
    spec subclass carries the extra arguments), ``metrics(spec)`` the metrics to compile with."""
    if kind in _CORE_LOSSES:
        raise ValueError(f"{kind!r} is a core loss kind; give the study's loss another name")
    entry = LossKind(build, metrics or _no_metrics, bool(class_head), bool(classifier))
    LOSS_KINDS[kind] = entry
    return entry


def _library_loss(name: str, arguments: Callable[..., dict] = lambda spec: {}) -> Callable:
    """``build(spec)``: the loss ``name`` of :data:`helpers.losses.LOSSES` with the spec's margin and
    ``arguments(spec)``."""
    return lambda spec: losses.get(name, margin=spec.margin, **arguments(spec))


LOSS_KINDS.update(
    {
        "contrastive": LossKind(_library_loss("contrastive")),
        "triplet": LossKind(
            _library_loss("triplet", lambda s: {"variant": "l2" if s.l2_normalized else "plain"})
        ),
        "batch_hard_triplet": LossKind(_library_loss("batch_hard_triplet")),
        "batch_semi_hard_triplet": LossKind(
            _library_loss("batch_semi_hard_triplet", lambda s: {"center_reg_weight": s.center_reg_weight})
        ),
        "batch_all_triplet": LossKind(
            _library_loss("batch_all_triplet", lambda s: {"squared": not s.l2_normalized})
        ),
        "batch_contrastive": LossKind(_library_loss("batch_contrastive")),
        "triplet_l2_cls": LossKind(
            _library_loss("triplet", lambda s: {"variant": "l2_safe"}), class_head=True
        ),
        "triplet_center_cls": LossKind(
            _library_loss(
                "triplet", lambda s: {"variant": "center", "center_reg_weight": s.center_reg_weight}
            ),
            class_head=True,
        ),
        # a plain classifier: no margin, no mining; val_accuracy for the monitor and the logs
        "cross_entropy": LossKind(
            lambda spec: keras.losses.SparseCategoricalCrossentropy(),
            metrics=lambda spec: ["accuracy"],
            classifier=True,
        ),
    }
)
_CORE_LOSSES = frozenset(LOSS_KINDS)

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


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the suite knows about one model.

    Every name is checked against its registry when the spec is built (a typo fails at once with
    the valid names): ``generator`` a key of ``helpers.samplers.GENERATORS`` (``"pairs"``,
    ``"triplets"``, ``"triplets_cls"``, or ``"pk"``: P classes x K images for online mining,
    ``batch_size`` is then P x K); ``loss`` a key of :data:`LOSS_KINDS` (``"batch_all_triplet"`` /
    ``"batch_contrastive"``: every triplet / pair of a P x K batch; the ``_cls`` losses add a class
    head; ``"cross_entropy"``: a plain softmax classifier on ``"pk"``
    batches, a class head on top of the embedding, which is then its penultimate layer); ``mining``
    one of ``helpers.samplers.MINING`` ("random", "hard", "semi-hard": negatives
    of pair/triplet generators in the model's own embedding space, refreshed every epoch);
    ``optimizer`` a key of :data:`OPTIMIZERS`; ``lr_schedule`` one of :data:`LR_SCHEDULES`
    (``"plateau"``: Keras' ReduceLROnPlateau, as the reference; ``"cosine"``: cosine decay to 1% over
    the run's steps). ``augment`` applies the samplers' small shifts, rotations and noise to the
    training batches: ``True`` / ``"host"`` in the sampler (numpy, :class:`helpers.augment.Augmenter`),
    ``"device"`` in the training graph (:class:`DeviceAugment`, for accelerators); ``augment_params``
    replaces the default strengths of either (``shift``, ``rotation``, ``noise``, ``elastic``, ``elastic_grid``).
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
            "loss": LOSS_KINDS,
            "generator": {**samplers.GENERATORS, **GENERATOR_KINDS},
            "mining": samplers.MINING,
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
        if self.monitor == "val_accuracy" and not LOSS_KINDS[self.loss].classifier:
            raise ValueError(
                "monitor='val_accuracy' needs loss='cross_entropy' (or another classifier loss kind: "
                "a model with an accuracy metric)"
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


STUDY_FIELDS = ("monitor", "plateau_factor", "plateau_patience", "weight_decay", "augment_params")
#: fields a cache fingerprint leaves out while they hold their defaults: adding one kept every older
#: entry's fingerprint (the study fields, and recalibrate_bn, which CBAM sets)
_OMITTED_AT_DEFAULT = (*STUDY_FIELDS, "recalibrate_bn", "weight_ema")


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
            # 1-3, 3-NN +0.0007 (benchmarks/archive/results/bn_recalibration_cnn_simple_v1.json)
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
            # +0.0020 and silhouette +0.004 (benchmarks/archive/results/bn_recalibration.json)
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
        # float32 under any policy, as the embedding layer before it (the output layer of a mixed-precision model)
        outputs = L2Normalize(name="l2_normalize", dtype="float32")(model.output)
        model = keras.Model(model.input, outputs, name=model.name)
    return model


def make_loss(spec: ModelSpec):
    """The Keras loss (or losses) for ``spec`` and the ``loss_weights`` to compile with."""
    kind = LOSS_KINDS[spec.loss]
    loss = kind.build(spec)
    if kind.class_head:
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
        if LOSS_KINDS[spec.loss].classifier:  # a plain classifier: the embedding is its penultimate layer
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
    metrics = LOSS_KINDS[spec.loss].metrics(spec)  # the entry's own (a classifier: accuracy)
    if metrics:
        kwargs["metrics"] = metrics
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
