"""The registry: study models register beside the six core ones."""

import pytest


def test_study_models_register_beside_the_six():
    import dataclasses

    from helpers import models

    base = models.MODELS["cnn_simple_v1"]
    spec = dataclasses.replace(base, name="study_test_model")
    try:
        assert models.register(spec) is spec and models.get_spec("study_test_model") is spec
        assert models.register(spec) is spec  # idempotent
        with pytest.raises(ValueError, match="already registered"):
            models.register(dataclasses.replace(spec, margin=1.0))
        with pytest.raises(ValueError, match="core models"):
            models.register(base)
        assert "study_test_model" not in models.MODELS
    finally:
        models.STUDY_MODELS.pop("study_test_model", None)
    with pytest.raises(ValueError, match="choose one of"):
        models.get_spec("study_test_model")
