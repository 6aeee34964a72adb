"""Every notebook's settings come from helpers.profiles, one way: a profile, then overrides."""

import pytest

from helpers import profiles


def test_every_notebook_has_the_three_profiles_with_the_same_knobs():
    for name, entry in profiles.notebooks().items():
        assert tuple(entry) == profiles.PROFILES, name
        assert set(entry["smoke"]) == set(entry["default"]) == set(entry["full"]), name


def test_the_profiles_keep_their_budgets():
    training = {p: profiles.settings("04_training", p) for p in profiles.PROFILES}
    assert [training[p]["epochs"] for p in profiles.PROFILES] == [1, None, 30]
    assert training["full"]["dataset"] == "fashion_mnist" and training["full"]["augment"] == "device"
    search = profiles.settings("07_search_and_applications", "smoke")
    assert (search["n_pairs"], search["episodes"]) == (500, 2)
    assert profiles.settings("07_search_and_applications", "default")["n_pairs"] == 5000
    assert profiles.settings("08_densenet_fashion_mnist", "default")["train"] == 12000
    assert profiles.settings("10_vicreg", "full")["epochs"] == 100


def test_overrides_replace_the_profile_values_none_included():
    assert profiles.settings("04_training", "smoke", epochs=None, models=["a"])["epochs"] is None
    assert profiles.settings("04_training", "smoke", models=["a"])["models"] == ["a"]
    assert profiles.knobs("01_data") == {"dataset", "source", "seed"}


def test_a_misspelt_name_is_an_error_that_names_the_choices():
    with pytest.raises(profiles.ProfileError, match="unknown profile 'huge'; choose one of: smoke"):
        profiles.settings("01_data", "huge")
    with pytest.raises(profiles.ProfileError, match="takes no setting 'epoch'; it takes: dataset"):
        profiles.settings("01_data", "default", epoch=3)
    with pytest.raises(
        profiles.ProfileError, match="no settings for notebook '99_x'; add its entry to .*yaml"
    ):
        profiles.settings("99_x")


def test_the_file_names_every_notebook_and_nothing_else():
    from helpers import run

    assert set(profiles.notebooks()) == {nb.stem for nb in run.notebooks()}


def test_a_malformed_entry_is_refused_with_its_name():
    raw = {"suite": {p: {"seed": 1} for p in profiles.PROFILES}}
    with pytest.raises(profiles.ProfileError, match="x takes \\['epochs'\\], which suite.smoke lacks"):
        profiles._compose(raw, "x", {"takes": ["epochs"]})
    with pytest.raises(profiles.ProfileError, match="x has unknown keys \\['fulll'\\]"):
        profiles._compose(raw, "x", {"fulll": {}})


def test_a_study_keeps_its_models_in_its_own_folder_per_profile(monkeypatch, tmp_path):
    from helpers import config
    from helpers.studies import cache

    monkeypatch.setattr(config, "MODELS_CACHE", tmp_path)  # followed when called, not frozen at import
    assert cache.folder("10_vicreg", "smoke") == tmp_path / "10_vicreg" / "smoke"
    assert cache.folder("09_contrastive_4_vs_9") == tmp_path / "09_contrastive_4_vs_9"
