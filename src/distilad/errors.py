"""Exceptions for mistakes a user can fix; the CLI prints them as one line and exits non-zero."""


class DistiladError(Exception):
    """Base class of user-facing errors (bad path, bad image, unknown method, bad model file)."""


class DataError(DistiladError, ValueError):
    """A folder, image or array cannot be used: missing, empty, unreadable, of an unsupported
    kind, an ambiguous shape or a wrong value range (also a ValueError, as numpy would raise)."""


class ModelFileError(DistiladError):
    """A saved model file is missing, corrupt, or not a distilad model."""


class ExportError(DistiladError):
    """A model cannot be exported (a method without an export path, a missing exporter package,
    or an exported graph whose results differ from PyTorch's)."""


class NotFittedError(DistiladError):
    """A detector was used for scoring before `fit` (or `load_detector`)."""


class DistiladWarning(UserWarning):
    """Something a user should know that does not stop the work; the CLI prints it once."""


class CacheWarning(DistiladWarning):
    """A teacher-feature cache entry was not written (no room on its disk, or the write
    failed); the run goes on with the features in memory, and the next run computes them again."""


class CalibrationWarning(DistiladWarning):
    """The threshold was set from fewer held-out normal images than ``target_fpr`` needs; the CLI
    prints it as one ``distilad: warning:`` line."""
