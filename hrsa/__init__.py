"""hrsa: Hierarchical Representation Similarity Analysis of neural-network checkpoints.

Compare two (or many) checkpoints layer by layer at three levels: representation (the
coordinate basis), geometry (the manifold's shape) and function (a linear readout).
"""

__version__ = "0.1.0"

from .capture import capture  # noqa: E402
from .models import Encoder, load  # noqa: E402

__all__ = ["__version__", "capture", "load", "Encoder"]
