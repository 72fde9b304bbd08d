"""Exceptions for mistakes a user can fix; the CLI prints them as one line and exits non-zero."""


class DistiladError(Exception):
    """Base class of user-facing errors (bad path, bad image, unknown method, bad model file)."""


class DataError(DistiladError):
    """A folder or image cannot be used: missing, empty, unreadable or of an unsupported kind."""


class ModelFileError(DistiladError):
    """A saved model file is missing, corrupt, or not a distilad model."""


class NotFittedError(DistiladError):
    """A detector was used for scoring before `fit` (or `load_detector`)."""
