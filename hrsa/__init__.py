"""hrsa: Hierarchical Representation Similarity Analysis of neural-network checkpoints.

Compare two (or many) checkpoints layer by layer at three levels, each defined by what
its metrics are invariant to: representation (the coordinate basis), geometry (the
manifold's shape) and function (a linear readout)::

    ds = hrsa.compare(model_a, model_b, texts)
"""

from .version import __version__
from . import (distributed, metrics, plot, probes, resampling, store,  # noqa: E402
               streaming, uncertainty)
from .capture import capture  # noqa: E402
from .compare import compare, trajectory  # noqa: E402
from .massive import massive_activations  # noqa: E402
from .models import Encoder, load  # noqa: E402
from .report import summarize  # noqa: E402
from .uncertainty import difference  # noqa: E402

__all__ = ["__version__", "capture", "compare", "trajectory", "difference", "summarize",
           "massive_activations", "load", "Encoder", "distributed", "metrics", "plot", "probes", "store", "streaming",
           "uncertainty"]
