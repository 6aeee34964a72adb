"""The registry: study models register beside the six core ones."""

import pytest


def test_study_models_register_beside_the_six():
    import dataclasses

    from helpers import registry

    base = registry.MODELS["cnn_simple_v1"]
    spec = dataclasses.replace(base, name="study_test_model")
    try:
        assert registry.register(spec) is spec and registry.get_spec("study_test_model") is spec
        assert registry.register(spec) is spec  # idempotent
        with pytest.raises(ValueError, match="already registered"):
            registry.register(dataclasses.replace(spec, margin=1.0))
        with pytest.raises(ValueError, match="core models"):
            registry.register(base)
        assert "study_test_model" not in registry.MODELS
    finally:
        registry.STUDY_MODELS.pop("study_test_model", None)
    with pytest.raises(ValueError, match="choose one of"):
        registry.get_spec("study_test_model")


@pytest.mark.parametrize(
    "field,typo,listed",
    [
        ("loss", "tripplet", "'batch_semi_hard_triplet'"),
        ("generator", "pair", "'triplets_cls'"),
        ("mining", "semihard", "'semi-hard'"),
        ("optimizer", "adamW", "'adamw'"),
        ("lr_schedule", "cosin", "'plateau' or 'cosine'"),
    ],
)
def test_a_typo_in_a_spec_fails_at_once_listing_the_valid_names(field, typo, listed):
    import dataclasses

    from helpers import registry

    base = registry.MODELS["cnn_simple_v1"]
    with pytest.raises(
        ValueError, match=f"model 'cnn_simple_v1': {field} must be .*{listed}.*, got '{typo}'"
    ):
        dataclasses.replace(base, **{field: typo})


def test_every_registered_name_builds():
    """Each loss of the registry builds through make_loss, each generator through get_generator."""
    import dataclasses

    import keras
    import numpy as np

    import helpers.studies.contrastive_4_vs_9  # noqa: F401 - registers the study losses
    import helpers.studies.vicreg  # noqa: F401
    from helpers import losses, registry, samplers

    base = registry.MODELS["cnn_simple_v1"]
    for name, kind in registry.LOSS_KINDS.items():
        # a study's loss builds from its own spec: the registered entry that names it
        owner = next((s for s in registry.STUDY_MODELS.values() if s.loss == name), None)
        spec = dataclasses.replace(base, loss=name) if owner is None else owner
        loss, weights = registry.make_loss(spec)
        if kind.class_head:
            assert isinstance(loss[1], keras.losses.SparseCategoricalCrossentropy) and len(weights) == 2
        else:
            assert isinstance(loss, keras.losses.Loss) and weights is None
        if name in losses.LOSSES:
            assert isinstance(loss, losses.LOSSES[name])
    for name in registry.OPTIMIZERS:
        assert isinstance(
            registry.make_optimizer(dataclasses.replace(base, optimizer=name)), keras.optimizers.Optimizer
        )
    x, y = np.zeros((12, 4, 4, 1), np.float32), np.repeat([0, 1, 2], 4)
    kwargs = {"pk": dict(classes_per_batch=2, samples_per_class=2)}
    for name, cls in samplers.GENERATORS.items():
        assert type(samplers.get_generator(name, x, y, **kwargs.get(name, {}))) is cls
    with pytest.raises(samplers.GeneratorError, match="unknown generator 'pairz'; choose one of: pairs"):
        samplers.get_generator("pairz", x, y)
    with pytest.raises(ValueError, match="unknown loss 'nope'; choose one of: contrastive"):
        losses.get("nope")


def test_make_loss_builds_what_the_if_chain_built():
    """The table reproduces the arguments the former if-chain passed (configs compared)."""
    from helpers import losses, registry

    def config(spec_name):
        loss, weights = registry.make_loss(registry.MODELS[spec_name])
        first = loss[0] if isinstance(loss, list) else loss
        own = {k: v for k, v in first.get_config().items() if k not in ("name", "reduction", "dtype")}
        return type(first).__name__, own, weights

    assert config("cnn_simple_v1") == ("BatchContrastiveLoss", {"margin": 10.0}, None)
    assert config("cnn_simple_v2") == ("BatchAllTripletLoss", {"margin": 10.0, "squared": True}, None)
    cbam = registry.MODELS["cnn_with_attention_v1"]
    assert config("cnn_with_attention_v1") == (
        "BatchSemiHardTripletLoss",
        {"margin": cbam.margin, "squared": False, "center_reg_weight": cbam.center_reg_weight},
        None,
    )
    assert config("cnn_with_attention_cls_head_v1") == (
        "TripletLoss",
        {"margin": 1.0, "variant": "l2_safe", "squared": None, "center_reg_weight": 0.05},
        [0.5, 1.0],
    )
    assert config("cnn_with_attention_cls_head_v2") == (
        "TripletLoss",
        {"margin": 1.5, "variant": "center", "squared": None, "center_reg_weight": 0.05},
        [1.0, 1.0],
    )
    assert isinstance(losses.get("triplet", margin=0.5, variant="l2"), losses.TripletLoss)


def test_weight_ema_averages_the_weights_at_each_epoch_end():
    """With momentum near 1 the averaged weight stays near the first step's; without, it runs off."""
    import dataclasses

    import keras
    import numpy as np

    from helpers import registry

    base = dataclasses.replace(registry.MODELS["cnn_simple_v1"], learning_rate=0.1, lr_schedule="plateau")
    with pytest.raises(ValueError, match=r"weight_ema must be in \[0, 1\)"):
        dataclasses.replace(base, weight_ema=1.0)
    x, y = np.ones((5, 1), np.float32), np.full((5, 1), 100.0, np.float32)

    def fitted(weight_ema):
        spec = dataclasses.replace(base, weight_ema=weight_ema)
        optimizer = registry.make_optimizer(spec, steps_per_epoch=5)
        assert optimizer.use_ema == bool(weight_ema)
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
        model.layers[0].kernel.assign([[0.0]])
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0)  # 5 steps, one epoch
        return float(model.layers[0].kernel.numpy()[0, 0])

    # Adam's first steps move the weight by about the rate each: 0.1 after one step, ~0.5 after five
    plain, averaged = fitted(0.0), fitted(0.999)
    assert 0.4 < plain < 0.6
    # the average starts at the first step's weight (0.1) and moves 0.1% a step towards the later ones
    assert 0.09 < averaged < 0.11
