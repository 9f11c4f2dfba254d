"""Probe tasks: labelled texts for the function-level (linear-probe) comparison.

A probe task is two parallel lists, ``texts: list[str]`` (n,) and ``labels: list[str]`` (n,),
with at least two distinct classes. :func:`load` reads one from

* a task shipped with hrsa (:func:`available`; provenance and licence in :func:`info`):
  ``reuters`` (Reuters-21578 newswire topics, the newswire analogue of the method's AG News
  probe) and ``wordnet_nouns`` (WordNet 3.0 noun glosses by semantic domain);
* a file of your own: ``.jsonl`` / ``.ndjson`` (one JSON object per line), ``.json`` (a list
  of objects), ``.csv`` or ``.tsv`` (a header row), with configurable field names;
* a Hugging Face hub dataset such as ``"ag_news"`` (the method's own probe task), when the
  optional ``datasets`` package is installed and the hub (or its local cache) is reachable.

Every source passes the same validation; a bad input raises ``ValueError`` naming the source,
the field and the record.

Example::

    from hrsa import probes
    texts, labels = probes.load("reuters")                  # 600 texts, 4 balanced classes
    texts, labels = probes.load("my_task.csv", text_field="sentence", label_field="topic")
    texts, labels = probes.load("ag_news", split="test")    # needs `datasets` and the hub
"""

from __future__ import annotations

import copy
import csv
import functools
import importlib
import importlib.resources
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["available", "info", "load"]

_PACKAGE = "hrsa.probe_tasks"
_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv")
_HUB_DEFAULT_SPLIT = "test"


@functools.lru_cache(maxsize=1)
def _tasks():
    """The shipped tasks' folder: the installed ``hrsa.probe_tasks`` package, or, when hrsa
    runs from a source checkout that was never installed (``PYTHONPATH=.``), the
    checkout's ``probes/`` folder that the package is built from."""
    try:
        return importlib.resources.files(_PACKAGE)
    except ModuleNotFoundError:
        source = Path(__file__).resolve().parent.parent / "probes"
        if not (source / "manifest.json").is_file():
            raise
        return source


@functools.lru_cache(maxsize=1)
def _manifest() -> dict[str, Any]:
    return json.loads(_tasks().joinpath("manifest.json").read_text("utf-8"))


def available() -> list[str]:
    """Names of the probe tasks shipped with hrsa, sorted.

    Returns:
        ``list[str]``, e.g. ``["reuters", "wordnet_nouns"]``.
    """
    return sorted(_manifest()["tasks"])


def info(name: str) -> dict[str, Any]:
    """The manifest entry of a shipped task (a copy; changing it changes nothing).

    Args:
        name: a name from :func:`available`.

    Returns:
        ``dict`` with keys ``name``, ``file``, ``description``, ``n`` (int), ``classes``
        (``list[str]``), ``per_class`` (``dict[str, int]``), ``source`` (package, registry,
        version, paths inside the package, sha256 of the source files, upstream), ``licence``,
        ``licence_text`` and ``sampling`` (seed, per-class count, word limits, method, script).

    Raises:
        ValueError: ``name`` is not a shipped task.
    """
    tasks = _manifest()["tasks"]
    if name not in tasks:
        raise ValueError(f"name={name!r} is not a shipped probe task; available: {available()}")
    return copy.deepcopy(tasks[name])


def load(
    name_or_path: str | os.PathLike[str],
    *,
    text_field: str = "text",
    label_field: str = "label",
    split: str | None = None,
    limit: int | None = None,
) -> tuple[list[str], list[str]]:
    """Load a probe task as ``(texts, labels)``.

    Resolution order: a shipped task name (:func:`available`); else an existing file, or any
    path ending in ``.jsonl``, ``.ndjson``, ``.json``, ``.csv`` or ``.tsv``; else a hub dataset
    name (``"owner/name"`` or ``"owner/name:config"``) loaded with ``datasets.load_dataset``.

    Args:
        name_or_path: shipped task name, file path, or hub dataset name.
        text_field: field (JSON key, CSV column, dataset column) that holds the text.
        label_field: field that holds the label. Strings are kept; integers become strings,
            except a hub ``ClassLabel`` column, whose integers map to its class names (AG News:
            ``World``, ``Sports``, ``Business``, ``Sci/Tech``).
        split: hub datasets: the split to load (default ``"test"``). Files: keep only records
            whose ``split`` field equals this value (the file must have that field). Shipped
            tasks have no splits (the probe makes its own): passing one raises.
        limit: keep only the first ``limit`` records (>= 1). Shipped tasks are interleaved by
            class, so any prefix stays balanced to within one text per class; for files and
            hub datasets the prefix is whatever order the source has.

    Returns:
        ``(texts, labels)``: two ``list[str]`` of equal length n >= 2, labels with >= 2 classes.

    Raises:
        ValueError: unknown name (neither shipped, nor a file, nor loadable from the hub), a
            missing file, an empty source, a record without ``text_field`` / ``label_field``,
            a text that is not a non-empty string, a label that is neither a string nor an
            integer, fewer than two classes, a bad ``split`` or ``limit``.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(
            f"name_or_path must be a task name, a path or a hub dataset name, got "
            f"{type(name_or_path).__name__}"
        )

    if isinstance(name_or_path, str) and name_or_path in _manifest()["tasks"]:
        if split is not None:
            raise ValueError(
                f"split={split!r}: shipped task {name_or_path!r} has no splits; load it whole "
                "and let the probe make its train/dev/test splits"
            )
        entry = _manifest()["tasks"][name_or_path]
        resource = _tasks().joinpath(entry["file"])
        source = f"shipped task {name_or_path!r} ({entry['file']})"
        records = _read_jsonl(resource.read_text("utf-8"), source)
        return _validate(records, source, text_field, label_field, None, limit)

    path = Path(name_or_path)
    if path.is_file() or path.suffix.lower() in _FILE_SUFFIXES or not isinstance(name_or_path, str):
        return _load_file(path, text_field, label_field, split, limit)

    return _load_hub(name_or_path, text_field, label_field, split, limit)


# ----------------------------------------------------------------------------- files


def _load_file(
    path: Path, text_field: str, label_field: str, split: str | None, limit: int | None
) -> tuple[list[str], list[str]]:
    source = f"file {str(path)!r}"
    if not path.is_file():
        raise ValueError(f"{source} does not exist (or is not a file)")
    suffix = path.suffix.lower()
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{source} is not UTF-8 text: {err}") from None
    if suffix in (".csv", ".tsv"):
        records = _read_csv(raw, source, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix == ".json":
        records = _read_json_list(raw, source)
    elif suffix in (".jsonl", ".ndjson"):
        records = _read_jsonl(raw, source)
    else:
        raise ValueError(
            f"{source}: unsupported suffix {path.suffix!r}; use one of {list(_FILE_SUFFIXES)}"
        )
    return _validate(records, source, text_field, label_field, split, limit)


def _read_jsonl(raw: str, source: str) -> list[tuple[str, Mapping[str, Any]]]:
    records = []
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}, line {lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(
                f"{source}, line {lineno}: expected a JSON object, got {type(obj).__name__}"
            )
        records.append((f"line {lineno}", obj))
    return records


def _read_json_list(raw: str, source: str) -> list[tuple[str, Mapping[str, Any]]]:
    if not raw.strip():
        return []
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a JSON list of objects, got {type(data).__name__}")
    records = []
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise ValueError(f"{source}, item {i}: expected a JSON object, got {type(obj).__name__}")
        records.append((f"item {i}", obj))
    return records


def _read_csv(raw: str, source: str, delimiter: str) -> list[tuple[str, Mapping[str, Any]]]:
    reader = csv.DictReader(raw.splitlines(), delimiter=delimiter)
    records = []
    for row in reader:
        # a short row gives None for the missing columns: treat those as absent fields
        obj = {k: v for k, v in row.items() if k is not None and v is not None}
        records.append((f"line {reader.line_num}", obj))
    return records  # empty for an empty or header-only file


# ----------------------------------------------------------------------------- hub


def _load_hub(
    name: str, text_field: str, label_field: str, split: str | None, limit: int | None
) -> tuple[list[str], list[str]]:
    not_local = (
        f"{name!r} is neither a shipped probe task (available: {available()}) nor an existing "
        "file (.jsonl, .ndjson, .json, .csv, .tsv)"
    )
    try:
        datasets = importlib.import_module("datasets")
    except ImportError:
        raise ValueError(
            f"{not_local}; to load it as a Hugging Face hub dataset install the optional "
            "`datasets` package"
        ) from None
    split = _HUB_DEFAULT_SPLIT if split is None else split
    repo, _, config = name.partition(":")
    source = f"hub dataset {name!r} (split {split!r})"
    try:
        ds = datasets.load_dataset(repo, config or None, split=split)
    except Exception as err:  # noqa: BLE001 - any failure becomes one clear message
        raise ValueError(
            f"{not_local}, and loading it from the Hugging Face hub failed "
            f"({type(err).__name__}: {err})"
        ) from err
    columns = list(getattr(ds, "column_names", []) or [])
    for role, field in (("text_field", text_field), ("label_field", label_field)):
        if field not in columns:
            raise ValueError(f"{source}: {role}={field!r} is not a column; columns: {columns}")
    n = len(ds)
    if limit is not None and limit < n and hasattr(ds, "select"):
        ds = ds.select(range(limit))
    texts = list(ds[text_field])
    raw_labels = list(ds[label_field])
    feature = (getattr(ds, "features", None) or {}).get(label_field)
    if feature is not None and callable(getattr(feature, "int2str", None)):
        raw_labels = [
            feature.int2str(v) if isinstance(v, int) and not isinstance(v, bool) else v
            for v in raw_labels
        ]
    records = [
        (f"row {i}", {text_field: t, label_field: lab})
        for i, (t, lab) in enumerate(zip(texts, raw_labels))
    ]
    return _validate(records, source, text_field, label_field, None, limit)


# ----------------------------------------------------------------------------- checks


def _validate(
    records: Iterable[tuple[str, Mapping[str, Any]]],
    source: str,
    text_field: str,
    label_field: str,
    split: str | None,
    limit: int | None,
) -> tuple[list[str], list[str]]:
    records = list(records)
    if not records:
        raise ValueError(f"{source} is empty: no records")
    if split is not None:
        if not any("split" in obj for _, obj in records):
            raise ValueError(
                f"{source}: split={split!r} given but the records have no 'split' field"
            )
        records = [(where, obj) for where, obj in records if obj.get("split") == split]
        if not records:
            raise ValueError(f"{source}: no records with split == {split!r}")
    if limit is not None:
        records = records[:limit]
    texts: list[str] = []
    labels: list[str] = []
    for where, obj in records:
        for role, field in (("text_field", text_field), ("label_field", label_field)):
            if field not in obj:
                raise ValueError(
                    f"{source}, {where}: no field {field!r} ({role}); fields there: {sorted(obj)}"
                )
        text = obj[text_field]
        if not isinstance(text, str):
            raise ValueError(
                f"{source}, {where}: field {text_field!r} must be a string, got "
                f"{type(text).__name__} ({text!r:.60})"
            )
        if not text.strip():
            raise ValueError(f"{source}, {where}: field {text_field!r} is empty")
        label = obj[label_field]
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise ValueError(
                f"{source}, {where}: field {label_field!r} must be a string or an integer, got "
                f"{type(label).__name__} ({label!r:.60})"
            )
        label = str(label)
        if not label.strip():
            raise ValueError(f"{source}, {where}: field {label_field!r} is empty")
        texts.append(text)
        labels.append(label)
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ValueError(
            f"{source}: field {label_field!r} has a single class {classes[0]!r} in the "
            f"{len(labels)} records loaded; a probe task needs at least two"
        )
    return texts, labels
