"""The scoring engine: from two models' activations to the variables of a comparison.

* :mod:`~hrsa.engine.pairs`: which rows and which layer pairs are compared, and the dims and
  coords of a grid of layer pairs;
* :mod:`~hrsa.engine.scoring`: every metric on every pair it needs, each layer prepared once
  per metric on the metric device, with or without text-level resampling;
* :mod:`~hrsa.engine.assemble`: scores -> labeled variables, and the comparison's provenance;
* :mod:`~hrsa.engine.chunked`: the same for dask-backed activations, from float64 moments
  read one chunk of rows at a time.

:func:`hrsa.compare`, :mod:`hrsa.streaming` and :mod:`hrsa.uncertainty` build on these
public functions; the engine never captures and never imports them (docs/design.md).
"""
