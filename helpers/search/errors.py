"""The errors of the search package: each says what is wrong and how to fix it."""


class SearchError(ValueError):
    """Bad input to an index (shapes, ids, k, kind) or an unusable image file."""


class NotAnIndexError(SearchError):
    """A folder that does not hold a saved ``EmbeddingIndex`` (missing, partial or unreadable)."""


class ModelMismatchError(SearchError):
    """The cached model is not the one that made the index's vectors (or is missing)."""


class ModelNotCachedError(SearchError):
    """The model an index needs is not in the cache, and training it was not asked for."""
