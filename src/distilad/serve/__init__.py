"""The inspection server: ``distilad serve MODEL`` (FastAPI + uvicorn, optional extra
``pip install 'distilad[serve]'``). :func:`create_app` builds the application from a model file
or a loaded model; see :mod:`distilad.serve.app` for the endpoints."""

from distilad.serve.app import create_app
from distilad.serve.uploads import DEFAULT_MAX_UPLOAD_BYTES, UploadError, UploadLimits

#: the packages ``distilad serve`` needs beyond distilad's own: (import names, any of which will
#: do; pip name). python-multipart is imported as python_multipart since 0.0.13, multipart before.
SERVE_PACKAGES = ((("fastapi",), "fastapi"), (("uvicorn",), "uvicorn"),
                  (("python_multipart", "multipart"), "python-multipart"))
INSTALL_HINT = "pip install 'distilad[serve]'"


def missing_packages() -> list[str]:
    """pip names of the serving packages that cannot be imported here."""
    import importlib.util

    return [pip for mods, pip in SERVE_PACKAGES
            if all(importlib.util.find_spec(m) is None for m in mods)]


__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "INSTALL_HINT", "UploadError", "UploadLimits",
           "create_app", "missing_packages"]
