"""The three ways getting weights can fail, shared by every module here."""

__all__ = ['WeightsMismatchError', 'WeightsFileError', 'WeightsDownloadError']


class WeightsMismatchError(ValueError):
    """The checkpoint's names or shapes do not fit the model."""


class WeightsFileError(WeightsMismatchError):
    """The file cannot be read as weights (truncated, corrupt, unsupported
    format). A subclass of WeightsMismatchError so that callers handling
    "these weights do not fit" also handle "these are not weights"."""


class WeightsDownloadError(RuntimeError):
    """A URL could not be fetched, or its content failed its checksum."""
