"""Detection methods; importing this package registers them."""

from distilad.methods.edegan.detector import EDEGANDetector  # noqa: F401
from distilad.methods.pkdgan.detector import PKDGANDetector  # noqa: F401
from distilad.methods.rd.detector import ReverseDistillation  # noqa: F401
from distilad.methods.transformaly.detector import Transformaly  # noqa: F401
