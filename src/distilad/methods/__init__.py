"""Detection methods; importing this package registers them."""

from distilad.methods.rd.detector import ReverseDistillation  # noqa: F401
