"""``IndexModel``: the registry model that made an index's vectors, and the check that it is still cached.

An index built by a cached registry model records the model's name, the fingerprint of its cache entry,
the cache folder and the dataset entry; a loaded index embeds query images with that model only while
the cache still holds the same entry (:class:`~helpers.search.errors.ModelMismatchError` otherwise).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from helpers import config
from helpers.search.errors import ModelMismatchError


@dataclasses.dataclass
class IndexModel:
    """The registry model ``name`` of an index: its cache entry's ``fingerprint``, the model cache
    ``cache_dir`` it was built from and the ``models_cache/<dataset>/`` entry it lives in."""

    name: str
    fingerprint: str | None = None
    cache_dir: str | None = None
    dataset: str = "mnist"

    @classmethod
    def from_metadata(cls, meta: dict) -> IndexModel | None:
        """The model an index's ``metadata.json`` names (``None`` for an index of plain embeddings)."""
        if not meta.get("model_name"):
            return None
        return cls(
            meta["model_name"],
            meta.get("model_fingerprint"),
            meta.get("model_cache_dir"),
            meta.get("model_dataset", "mnist"),
        )

    def metadata(self) -> dict:
        """What ``metadata.json`` records of the model."""
        return {
            "model_name": self.name,
            "model_fingerprint": self.fingerprint,
            "model_cache_dir": self.cache_dir,
            "model_dataset": self.dataset,
        }

    def cache_folder(self) -> Path:
        """The cache it was built from, when that still exists; else ``config.MODELS_CACHE``."""
        if self.cache_dir and Path(self.cache_dir).is_dir():
            return Path(self.cache_dir)
        return config.MODELS_CACHE

    def check(self) -> Path:
        """The cache folder holding this model with the same fingerprint; ``ModelMismatchError`` when
        the model is missing or was retrained since."""
        from helpers.training import read_cache_record

        cache_dir = self.cache_folder()
        record = read_cache_record(self.name, cache_dir, self.dataset)
        if record is None:
            raise ModelMismatchError(
                f"model {self.name!r} that made this index is not in the cache {cache_dir}; "
                f"train it again with the same settings or pass its cache_dir / --cache-dir."
            )
        if record.get("fingerprint") != self.fingerprint:
            raise ModelMismatchError(
                f"the cached model {self.name!r} in {cache_dir} changed since this index was built "
                f"(fingerprint {str(record.get('fingerprint'))[:12]} != {str(self.fingerprint)[:12]}); "
                f"rebuild the index with the current model."
            )
        return cache_dir

    def lazy_embed_fn(self, input_shape):
        """``images -> embeddings`` with this model, loaded (after :meth:`check`) at the first call."""
        loaded = {}

        def embed_images(images):
            if "model" not in loaded:
                from helpers.training import CacheError, load_embedding

                cache_dir = self.check()
                try:
                    loaded["model"] = load_embedding(
                        self.name,
                        input_shape=input_shape or (28, 28, 1),
                        cache_dir=cache_dir,
                        dataset=self.dataset,
                    )
                except CacheError as exc:
                    raise ModelMismatchError(f"model {self.name!r} cannot be loaded: {exc}") from None
            from helpers.evaluation import embed

            return embed(loaded["model"], images)

        return embed_images
