"""Test the method's claims: train and evaluate SSP-OV with each idea switched off, on several seeds.

``python train/ablate.py`` trains every variant with ``train/configs/ablation.yaml``
(only the switch under test differs) once per training seed (``--seeds``, default 0 and
1), picks each run's foreground threshold and guided filter on the val split, evaluates
each run on the test split with the clips' scene text (SSP's setting), and writes
``benchmarks/results/ablation.md`` (and ``.json``): per variant the mean over seeds with
the seeds' range of base / novel / harmonic mIoU, AVSS mIoU and F, and harmonic mIoU on
frames whose sounding objects move / stand still; then what each idea buys (full minus
the variant, seed by seed) and whether its sign holds on every seed.

Each run lives in ``OUT/<variant>/seed<k>/`` (OUT is the config's ``out``) and resumes
like train.py; a finished run keeps its scores in ``ablation_result.json`` there, so
running again (or in two processes, ``--seeds 0`` and ``--seeds 1``, then once with
both to gather the table) retrains and re-scores nothing. Another setting needs another
``--set out=DIR``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from statistics import mean

from avss_sdk.data.avsbench import AVSSDataset
from avss_sdk.fileio import write_text_atomic
from avss_sdk.modeling.checkpoint import CheckpointError, load_model, read_checkpoint
from avss_sdk.training.data import prepare_frames
from avss_sdk.training.evaluate import calibrate_decision, evaluate
from avss_sdk.training.trainer import TrainConfig, train

from train import load_config  # train/train.py: a script's own folder is first on sys.path

VARIANTS = {
    "full": [],
    "no flow pre-mask": ["model.use_premask=false"],
    "no scene prompt": ["model.use_scene_prompt=false"],
    "no category prompt (VTA off)": ["model.use_vta=false"],
    "no post-mask loss": ["model.use_post_mask=false"],
}
RESULT_FILE = "ablation_result.json"
# (column, path into a run's result): the figures the tables report
METRICS = [("base mIoU", ("scores", "base_miou")), ("novel mIoU", ("scores", "novel_miou")),
           ("harmonic", ("scores", "harmonic_miou")), ("AVSS mIoU", ("avss_miou",)), ("AVSS F", ("avss_fscore",)),
           ("moving harmonic", ("moving", "harmonic_miou")), ("still harmonic", ("still", "harmonic_miou"))]
GAINS = ["harmonic", "AVSS mIoU", "moving harmonic", "still harmonic"]


def slug(variant: str) -> str:
    """The folder name of a variant: "no category prompt (VTA off)" -> "no_category_prompt"."""
    return variant.split(" (")[0].replace(" ", "_").replace("-", "_")


def figure(result: dict, path: tuple[str, ...]) -> float:
    """The number at ``path`` in a run's result, e.g. ("scores", "base_miou")."""
    for key in path:
        result = result[key]
    return float(result)


def spread(values: list[float]) -> str:
    """Mean with the range over seeds: "61.2 (60.1-62.3)"; a single seed is just its value."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{mean(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def gain(full: dict[int, float], variant: dict[int, float]) -> str:
    """Full minus variant, mean over the seeds both have, with each seed's difference (the same seed
    gives both the same batches and the same random stream for their initial weights)."""
    seeds = sorted(set(full) & set(variant))
    if not seeds:
        return "n/a"
    differences = [full[s] - variant[s] for s in seeds]
    each = ", ".join(f"{d:+.1f}" for d in differences)
    if len(seeds) < 2:
        return f"{differences[0]:+.1f} (one seed)"
    signs = {d > 0 for d in differences}
    return f"{mean(differences):+.1f} ({each}: {'same sign on every seed' if len(signs) == 1 else 'signs differ'})"


def write_table(path: Path, config: str, base: TrainConfig, split: str, seeds: list[int],
                results: dict[str, dict[int, dict]]) -> None:
    """Write the markdown tables and the JSON from every finished run (again after each run,
    so a cut-short ablation keeps what it has)."""
    values = {name: {column: {seed: figure(r, key) for seed, r in runs.items()} for column, key in METRICS}
              for name, runs in results.items() if runs}
    rows = [f"| {name} | {', '.join(map(str, sorted(results[name])))} | "
            + " | ".join(spread(list(v[column].values())) for column, _ in METRICS) + " |" for name, v in values.items()]
    gains = [f"| {name} | " + " | ".join(gain(values["full"][column], v[column]) for column in GAINS) + " |"
             for name, v in values.items() if name != "full" and "full" in values]
    machine = f"{platform.processor() or platform.machine()}, {platform.system()}"
    text = "\n".join([
        "# Ablation: SSP-OV with each idea switched off",
        "",
        f"`python train/ablate.py --config {config} --seeds {' '.join(map(str, seeds))}` on SynthAVS-OV "
        f"({split} split, scene text given).",
        f"Setting: {base.model.image_size}px, {base.optim.steps} steps of batch {base.optim.batch_size}, learning "
        f"rate {base.optim.lr:g}, CPU ({machine}); each variant trained once per seed (the seed sets the batches "
        "and the random stream of the initial weights). Each run's foreground threshold and guided filter are picked on the val split. "
        "Figures: the mean over seeds, the seeds' range in brackets. Moving / still: frames whose sounding objects "
        "all move / all stand still.",
        "",
        "| variant | seeds | " + " | ".join(column for column, _ in METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
        *rows,
        "",
        "## What each idea buys",
        "",
        "Full minus the variant (positive: the idea helps), the mean over seeds and each seed's difference. "
        "A seed gives every variant the same batches in the same order and draws its initial weights from the "
        "same random stream, so a seed's pair is compared like with like. A difference whose sign differs "
        "between seeds is within the noise; the same sign on two seeds is weak evidence (it happens half the "
        "time by chance), more seeds make it stronger.",
        "",
        "| without | " + " | ".join(GAINS) + " |",
        "|---|" + "---|" * len(GAINS),
        *gains,
        "",
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path.with_suffix(".md"), text)
    write_text_atomic(path.with_suffix(".json"), json.dumps(results, indent=1) + "\n")


def run_variant(config: TrainConfig, split: str, progress: bool) -> dict:
    """Train one run (or resume it), pick its decision on val and score it on ``split``;
    the scores are kept next to the checkpoint and reused when the setting is the same."""
    out = Path(config.out)
    saved = out / RESULT_FILE
    key = json.loads(json.dumps({"train_config": config.to_dict(), "split": split}))  # as it reads back
    if saved.is_file():
        result = json.loads(saved.read_text(encoding="utf-8"))
        if {k: result.get(k) for k in key} == key:
            return result
    checkpoint = out / "model.pt"
    if checkpoint.is_file() and read_checkpoint(checkpoint).get("train_config") != config.to_dict():
        raise SystemExit(f"{checkpoint} was trained with another setting; choose a new folder with --set out=DIR")
    tic = time.perf_counter()
    if not checkpoint.is_file():
        checkpoint = train(config, progress=progress)
    train_seconds = time.perf_counter() - tic
    model, _ = load_model(checkpoint)
    cache = config.data.cache or Path(config.data.root) / "cache"
    val = AVSSDataset(config.data.root, split="val", classes="all", load_flow=False)
    val_data = prepare_frames(val, config.model.image_size, cache, progress=progress)
    threshold, guided, _ = calibrate_decision(model, val_data, val.base_ids, val.novel_ids, progress=progress)
    dataset = AVSSDataset(config.data.root, split=split, classes="all", load_flow=False)
    data = prepare_frames(dataset, config.model.image_size, cache, progress=progress)
    scores = evaluate(model, data, dataset.base_ids, dataset.novel_ids, scene_text=True, progress=progress,
                      threshold=threshold, guided=guided)
    result = {**key, "train_seconds": round(train_seconds), "foreground_threshold": threshold,
              "guided_filter": guided.to_dict() if guided else None, **scores.to_dict()}
    write_text_atomic(saved, json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="train/configs/ablation.yaml")
    parser.add_argument("--data", help="dataset root (default: the config's data.root)")
    parser.add_argument("--split", default="test", help="evaluation split (default test)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], metavar="SEED",
                        help="training seeds, one run of each variant per seed (default 0 1)")
    parser.add_argument("--out", default="benchmarks/results/ablation", help="table path without extension")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    parser.add_argument("--only", action="append", choices=list(VARIANTS), help="run only these variants")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        parser.error(f"--seeds must be distinct and >= 0, got {args.seeds}")

    base = load_config(args.config, args.set)
    results: dict[str, dict[int, dict]] = {}
    for name, switches in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        results[name] = {}
        for seed in args.seeds:
            config = load_config(args.config, [*args.set, *switches, f"optim.seed={seed}"],
                                 out=str(Path(base.out) / slug(name) / f"seed{seed}"))
            if args.data:
                config.data.root = args.data
            results[name][seed] = result = run_variant(config, args.split, progress=not args.quiet)
            print(f"{name}, seed {seed}: " + ", ".join(f"{column} {figure(result, key):.1f}" for column, key in METRICS),
                  flush=True)
            write_table(Path(args.out), args.config, base, args.split, args.seeds, results)

    print(f"wrote {Path(args.out).with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FileNotFoundError, CheckpointError) as error:
        raise SystemExit(f"error: {error}") from None
