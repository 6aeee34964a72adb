"""The training and validation batches of a registry entry: which sampler, its arguments, mining."""

from __future__ import annotations

import keras

from helpers import samplers
from helpers.augment import Augmenter
from helpers.samplers import GENERATOR_KINDS

#: threads that build the next batches while the trainer runs this one (``PyDataset(workers=...)``)
AUGMENT_THREADS = 2


def mining_embedder(embedding: keras.Model, trainer: keras.Model | None):
    """``embed_fn`` of a mining generator: the training images in ``embedding``'s current space.

    Backend shim (JAX): during ``fit`` the JAX trainer keeps the weights in its own state and empties
    the variables, and a ``PyDataset`` ends its epoch before the trainer puts them back; the
    trainer's public ``jax_state_sync()`` (what a callback that needs the weights calls) puts them
    back first. Other backends have no such method and need nothing."""

    def embed(x):
        sync = getattr(trainer, "jax_state_sync", None)
        if sync is not None:
            sync()
        return embedding.predict(x, batch_size=512, verbose=0)

    return embed


def make_generators(
    spec,
    data,
    batch_size: int,
    steps_per_epoch: int,
    seed: int = 0,
    embedding: keras.Model | None = None,
    trainer: keras.Model | None = None,
):
    """The training and validation generators for the registry entry ``spec`` (``get_spec(name)``).

    The spec's ``generator`` names a class of ``helpers.samplers.GENERATORS`` (or a study's kind
    in ``helpers.samplers.GENERATOR_KINDS``). With ``spec.mining != "random"`` the training generator
    mines negatives in ``embedding``'s space, re-embedding the training images every epoch
    (``trainer``: the training model being fit, whose weights those are). The validation batches
    stay the same every epoch (epoch 0, no augmentation), so val_loss is comparable.
    """
    val_steps = max(1, min(steps_per_epoch, len(data.x_val) // batch_size))
    kind = GENERATOR_KINDS.get(spec.generator)
    if kind is not None:  # a study's own sampler, registered by its module
        return (
            kind.factory(
                spec, data.x_train, data.y_train, batch_size, steps_per_epoch, seed, host_augment(spec)
            ),
            kind.factory(spec, data.x_val, data.y_val, batch_size, val_steps, seed + 10_000, False),
        )
    mining = {}
    if spec.mining != "random":
        if embedding is None:
            raise ValueError(f"model {spec.name!r} mines with mining={spec.mining!r}: pass its embedding")
        mining = {"mining": spec.mining, "embed_fn": mining_embedder(embedding, trainer)}
    batches = batch_arguments(spec, batch_size)
    train_gen = samplers.get_generator(
        spec.generator,
        data.x_train,
        data.y_train,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        augment=host_augment(spec),
        **batches,
        **mining,
        **augment_threads(spec),
    )
    val_gen = samplers.get_generator(
        spec.generator, data.x_val, data.y_val, steps_per_epoch=val_steps, seed=seed + 10_000, **batches
    )
    return train_gen, val_gen


def host_augment(spec):
    """The training generator's ``augment``: False, or the numpy augmenter of ``spec.augment_params``
    (``True``, the default strengths, when it has none)."""
    if not spec.augment_on_host:
        return False
    return Augmenter(**spec.augment_params) if spec.augment_params else True


def augment_threads(spec) -> dict:
    """``PyDataset`` arguments of a training generator: worker threads when it augments on the host.

    Each batch draws from its own ``(seed, epoch, index)`` stream, so threads give the trainer the same
    batches in the same order; they only overlap the numpy augmentation with the training step
    (the suite-time benchmark measures what it saves). A mining generator keeps one: its
    epoch-end refresh embeds the training images with the model being trained.
    """
    if spec.augment_on_host and spec.mining == "random":
        return {"workers": AUGMENT_THREADS, "use_multiprocessing": False}
    return {}


def batch_arguments(spec, batch_size: int) -> dict:
    """The generator's batch arguments: ``batch_size``, or P classes x K images for ``"pk"``."""
    if spec.generator == "pk":
        return {
            "classes_per_batch": spec.classes_per_batch,
            "samples_per_class": max(2, batch_size // spec.classes_per_batch),
        }
    return {"batch_size": batch_size}
