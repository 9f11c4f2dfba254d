"""Activations on disk: a zarr store written batch by batch, opened back lazily with dask.

``hrsa.capture(..., store="acts.zarr")`` writes the captured rows into a zarr store instead
of memory and returns the store opened as a dask-backed DataArray (:func:`open_activations`);
``hrsa.compare`` reads such arrays chunk by chunk (:func:`hrsa.streaming.score_chunked`).

Layout: the zarr group xarray writes for a DataArray named ``activations``, dims ``(layer,
token|sample, feature)``, float32, with the in-memory capture's coords (``layer``,
``depth``; ``text``, ``position``, ``token_id`` or ``sample``) and attrs. Chunks are one
layer x ``chunk_rows`` rows x all features (default about 16 MiB each), so a layer is read
without touching the others and a block of rows is read without loading the rest.
Compression: zarr's default codec (zstd); activations compress little (about 8%).

Writing: capture runs the same length-sorted batches as in memory (so every row is bitwise
the in-memory row), and a batch's rows belong to texts spread over the whole row axis.
:class:`StoreWriter` splits each batch's rows by destination chunk, stages them on disk as
``.npy`` pieces, and writes a chunk once, one layer at a time, as soon as all its rows have
arrived. Memory: one batch plus one chunk of one layer; disk: up to the store's size again
for the staged pieces while writing.

Atomicity: everything is written under a hidden temporary sibling of the target
(``.acts.zarr.partial-*``), renamed into place at the end; a failure or an interrupt removes
it, so no partial store is ever left behind. An existing target is replaced only with
``overwrite=True``, and only if it is a zarr store (or an empty folder); the old store stays
intact until the new one is complete.

zarr and dask are optional (``pip install "hrsa[scale]"``); they are imported only here, on
use.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
import xarray as xr

CHUNK_BYTES = 16 * 2**20
"""Default size of one chunk (one layer x ``chunk_rows`` rows x all features, float32)."""


def require() -> tuple[ModuleType, ModuleType]:
    """The ``zarr`` and ``dask.array`` modules, or an ImportError that says how to get them."""
    try:
        import dask.array
        import zarr
    except ImportError as error:
        raise ImportError(f"activations on disk (store=) need zarr and dask ({error}); "
                          'install them with: pip install "hrsa[scale]"') from error
    return zarr, dask.array


def check_target(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """``path`` as an absolute Path, once it is clear a store can be written there.

    Raises:
        ImportError: zarr or dask is missing.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: ``path`` exists but is not a zarr store nor an empty folder (never
            deleted, even with ``overwrite=True``).
        FileNotFoundError: the parent folder does not exist.
    """
    require()
    path = Path(path).expanduser().absolute()
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"store {str(path)!r} already exists; pass overwrite=True to "
                                  "replace it, or choose another path")
        if not _is_replaceable(path):
            raise ValueError(f"store {str(path)!r} exists and is not a zarr store (no "
                             "zarr.json/.zgroup) nor an empty folder; refusing to delete it "
                             "even with overwrite=True")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"store {str(path)!r}: the folder {str(path.parent)!r} does "
                                "not exist")
    return path


def default_chunk_rows(n_features: int) -> int:
    """Rows per chunk so that one chunk (one layer, float32) holds about
    :data:`CHUNK_BYTES`."""
    return max(1, CHUNK_BYTES // (4 * n_features))


def placeholder(shape: tuple[int, int, int], chunk_rows: int | None = None) -> Any:
    """A lazy float32 dask array of ``shape`` ``(layer, row, feature)``, in chunks of one
    layer x ``chunk_rows`` rows (default all) x all features: stands for the data in a
    store's template (nothing is allocated)."""
    _, dask_array = require()
    return dask_array.empty(shape, dtype=np.float32, chunks=(1, chunk_rows or -1, -1))


class StoreWriter:
    """Writes the rows of ``template`` into a new zarr store at ``path``, batch by batch.

    Use as a context manager: on a clean exit the store is checked complete and renamed into
    place; on any exception (KeyboardInterrupt included) the temporary folder is removed and
    nothing is left at ``path``::

        with StoreWriter("acts.zarr", template) as writer:
            for rows, dest in batches:      # rows: (L, m, D), dest: (m,) row indices
                writer.write(rows, dest)

    Args:
        path: the store to create (checked with :func:`check_target`).
        template: a DataArray with dims ``(layer, row, feature)`` and the store's coords and
            attrs; its data is never read (a :func:`placeholder` keeps it lazy).
        chunk_rows: rows per chunk; default :func:`default_chunk_rows`.
        overwrite: replace an existing zarr store at ``path``.
    """

    def __init__(self, path: str | os.PathLike, template: xr.DataArray, *,
                 chunk_rows: int | None = None, overwrite: bool = False) -> None:
        self.path = check_target(path, overwrite)
        self.overwrite = overwrite
        if template.ndim != 3 or template.dims[0] != "layer" or template.dims[2] != "feature":
            raise ValueError(f"template must have dims (layer, row, feature), got "
                             f"{template.dims}")
        if chunk_rows is not None and chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        n_layers, self.n_rows, n_features = template.shape
        self.chunk_rows = min(chunk_rows or default_chunk_rows(n_features), self.n_rows)
        data = placeholder(template.shape, self.chunk_rows)
        self.template = template.copy(data=data).rename("activations").assign_coords(
            {name: coord.compute() for name, coord in template.coords.items()})
        self._tmp: Path | None = None

    def __enter__(self) -> StoreWriter:
        zarr, _ = require()
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-",
                                          dir=self.path.parent))
        try:
            with warnings.catch_warnings():  # consolidated metadata: quiet xr.open_zarr
                warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
                self.template.to_zarr(self._tmp / "store", compute=False, consolidated=True)
            self._array = zarr.open_group(self._tmp / "store", mode="r+")[self.template.name]
            (self._tmp / "staging").mkdir()
        except BaseException:
            self._remove_tmp()
            raise
        self._written = np.zeros(self.n_rows, dtype=bool)
        self._pieces: dict[int, list[tuple[Path, np.ndarray]]] = {}
        self._n_staged = 0
        return self

    def write(self, rows: np.ndarray, dest: np.ndarray) -> None:
        """Store ``rows: (L, m, D)`` float32 at row indices ``dest: (m,)`` (each row once).

        Every chunk this completes is written at once; the other rows are staged on disk.
        """
        rows, dest = np.asarray(rows, dtype=np.float32), np.asarray(dest, dtype=np.int64)
        n_layers, _, n_features = self.template.shape
        if rows.ndim != 3 or rows.shape[::2] != (n_layers, n_features) \
                or rows.shape[1] != len(dest):
            raise ValueError(f"rows must be ({n_layers}, {len(dest)}, {n_features}) for "
                             f"{len(dest)} destination rows, got {rows.shape}")
        if len(dest) and (dest.min() < 0 or dest.max() >= self.n_rows):
            raise ValueError(f"destination rows must lie in 0..{self.n_rows - 1}")
        if self._written[dest].any() or len(np.unique(dest)) < len(dest):
            raise ValueError("some rows are written twice")
        self._written[dest] = True
        chunk_of = dest // self.chunk_rows
        for chunk in np.unique(chunk_of):
            sel = np.flatnonzero(chunk_of == chunk)
            piece = (rows[:, sel], dest[sel])
            r0, r1 = self._bounds(chunk)
            if self._written[r0:r1].all():
                self._flush(chunk, self._pieces.pop(chunk, []) + [piece])
            else:
                path = self._tmp / "staging" / f"{self._n_staged}.npy"
                self._n_staged += 1
                np.save(path, piece[0])
                self._pieces.setdefault(chunk, []).append((path, piece[1]))

    def _bounds(self, chunk: int) -> tuple[int, int]:
        return chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, self.n_rows)

    def _flush(self, chunk: int, pieces: list[tuple[Path | np.ndarray, np.ndarray]]) -> None:
        """Assemble chunk ``chunk`` from its pieces (``(L, m_i, D)`` arrays or staged files
        of them, with their row indices) and write it, one layer at a time."""
        r0, r1 = self._bounds(chunk)
        block = np.empty((r1 - r0, self.template.shape[2]), dtype=np.float32)
        for layer in range(self.template.shape[0]):
            for piece, dest in pieces:
                # a staged file is mapped, only this layer's pages read, and unmapped
                values = np.load(piece, mmap_mode="r") if isinstance(piece, Path) else piece
                block[dest - r0] = values[layer]
            del values
            self._array[layer, r0:r1] = block
        for p, _ in pieces:
            if isinstance(p, Path):
                p.unlink()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            self._remove_tmp()

    def _commit(self) -> None:
        missing = int((~self._written).sum())
        if missing:
            raise ValueError(f"store {str(self.path)!r}: {missing} of {self.n_rows} rows were "
                             "never written; nothing is kept")
        if self.path.exists() or self.path.is_symlink():
            if not self.overwrite:
                raise FileExistsError(f"store {str(self.path)!r} appeared while writing; "
                                      "pass overwrite=True to replace it")
            if not _is_replaceable(self.path):
                raise ValueError(f"store {str(self.path)!r} was replaced while writing by "
                                 "something that is not a zarr store; it is left as it is")
            os.replace(self.path, self._tmp / "old")  # removed with the temporary folder
        os.replace(self._tmp / "store", self.path)

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def open_activations(path: str | os.PathLike) -> xr.DataArray:
    """The activations stored at ``path``, dask-backed: ``(layer, token|sample, feature)``
    with one dask chunk per zarr chunk; the coords are loaded (a few integers per row),
    the activations stay on disk until computed.

    Equivalent to ``xr.open_dataarray(path, engine="zarr", chunks={})``.
    """
    require()
    path = Path(path).expanduser()
    if not _is_zarr_store(path):
        raise FileNotFoundError(f"no zarr store at {str(path)!r}")
    da = xr.open_dataarray(path, engine="zarr", chunks={})
    return da.assign_coords({name: coord.compute() for name, coord in da.coords.items()
                             if coord.chunks is not None})


def _is_zarr_store(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file()
                                 for name in ("zarr.json", ".zgroup", ".zarray"))


def _is_replaceable(path: Path) -> bool:
    """A zarr store, or an empty folder (never a file, nor a folder holding anything else)."""
    return not path.is_symlink() and (_is_zarr_store(path) or (
        path.is_dir() and not any(path.iterdir())))
