"""The training loop: config, batches, optimisation, logs and crash-safe checkpoints.

* Resumable: ``OUT/last.pt`` (model, optimiser, schedule, AMP scaler, step) is written
  atomically every ``checkpoint_every`` steps and when the process is interrupted
  (Ctrl-C or SIGTERM). Batches are drawn from an RNG seeded by (seed, step, rank), so a
  resumed run sees exactly the batches the uninterrupted one would have.
* Logs: one JSON line per ``log_every`` steps in ``OUT/log.jsonl`` (step, learning rate,
  every loss part, seconds per step), ready for any plotting tool (pandas.read_json(lines=True)).
  A resumed run first drops the lines of steps after its checkpoint (they are run again), and
  temporary checkpoint files left by a killed process are removed.
* CPU works; on GPUs AMP (bf16, or fp16 with a gradient scaler) and ``torchrun``
  (DistributedDataParallel, one process per GPU) work too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from avss_sdk.data.avsbench import AVSSDataset
from avss_sdk.fileio import write_atomic
from avss_sdk.modeling.checkpoint import build_model, read_checkpoint, save_checkpoint
from avss_sdk.modeling.ssp_ov import SSPOV, ForwardOutput, ModelConfig
from avss_sdk.training.data import Batch, FrameArrays, label_lookup, make_batch, prepare_frames
from avss_sdk.training.losses import LossWeights, total_loss


@dataclass
class DataConfig:
    root: str = "data/synthavs"
    split: str = "train"
    classes: str = "base"  # train on the base vocabulary only (open-vocabulary protocol)
    subsets: list[str] | None = None  # AVSBench: v1s / v1m / v2; None = all
    cache: str | None = None  # prepared arrays; default ROOT/cache
    workers: int = 0  # processes preparing the cache; 0 = one per CPU core


@dataclass
class OptimConfig:
    steps: int = 3000
    batch_size: int = 16
    lr: float = 1e-3
    backbone_lr_scale: float = 0.3
    text_lr_scale: float = 0.5
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    amp: str = "auto"  # auto: on for CUDA; "off" / "on"
    seed: int = 0
    scene_dropout: float = 0.5  # fraction of samples trained without scene text
    flip: bool = True
    mask_size: int = 96
    threads: int = 0  # torch CPU threads; 0 = torch's default
    minutes: float = 0.0  # time budget: the schedule ends at steps or at this many training minutes (0: none)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    out: str = "runs/default"
    init: str | None = None  # warm start: weights of this checkpoint ("default": the shipped model)
    checkpoint_every: int = 100
    log_every: int = 10

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        sections = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "loss": LossWeights}
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown config sections {unknown}")
        kwargs = {}
        for name, value in values.items():
            if name in sections:
                known = {f.name for f in dataclasses.fields(sections[name])}
                bad = sorted(set(value or {}) - known)
                if bad:
                    raise ValueError(f"unknown keys in '{name}': {bad}; known: {sorted(known)}")
                kwargs[name] = sections[name](**_coerce_floats(sections[name], value or {}))
            else:
                kwargs[name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce_floats(section: type, values: dict[str, Any]) -> dict[str, Any]:
    """YAML reads "1e-3" (no dot) as a string: accept it, and ints, where the field is a float."""
    floats = {f.name for f in dataclasses.fields(section) if isinstance(f.default, float)}
    out = dict(values)
    for key in floats & set(values):
        try:
            out[key] = float(values[key])
        except (TypeError, ValueError):
            raise ValueError(f"{section.__name__}.{key} must be a number, got {values[key]!r}") from None
    return out


def _learning_rate_factor(step: int, warmup: int, progress: float) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine to 5 % over ``progress`` (0 to 1) of the schedule."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _schedule_progress(step: int, cfg: OptimConfig, seconds: float) -> float:
    """How far through the schedule a run is: by steps, or by time where a budget is set and nearer its end."""
    by_steps = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return max(by_steps, seconds / (60 * cfg.minutes)) if cfg.minutes > 0 else by_steps


class _TrainingForward(nn.Module):
    """Text embeddings and the model in one forward, so DistributedDataParallel sees every parameter."""

    def __init__(self, model: SSPOV) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch, vocabulary: list[str],
                scenes: list[str | None]) -> tuple[ForwardOutput, torch.Tensor]:
        classes = self.model.text_encoder.embed_categories(vocabulary)
        scene = self.model.scene_embeddings(scenes)
        return self.model(batch.previous, batch.current, batch.log_mel, classes, scene), classes


def _param_groups(model: SSPOV, cfg: OptimConfig) -> list[dict[str, Any]]:
    trunk = set(id(p) for p in model.image_encoder.trunk.parameters())
    text = set(id(p) for p in model.text_encoder.parameters())
    groups: dict[str, list[nn.Parameter]] = {"trunk": [], "text": [], "rest": []}
    for p in model.parameters():
        groups["trunk" if id(p) in trunk else "text" if id(p) in text else "rest"].append(p)
    scale = {"trunk": cfg.backbone_lr_scale, "text": cfg.text_lr_scale, "rest": 1.0}
    return [{"params": ps, "lr": cfg.lr * scale[name], "base_lr": cfg.lr * scale[name]}
            for name, ps in groups.items() if ps]


class _StopRequested(Exception):
    pass


def _distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device


def train(config: TrainConfig, progress: bool = True) -> Path:
    """Train (or resume) the run in ``config.out``; returns the path of the final ``model.pt``."""
    rank, world, device = _distributed()
    cfg = config.optim
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = AVSSDataset(config.data.root, split=config.data.split, subsets=config.data.subsets,
                          classes=config.data.classes, load_flow=True)
    cache = config.data.cache or str(Path(config.data.root) / "cache")
    if rank == 0:  # one process prepares the cache; the others read it once it is complete
        data: FrameArrays = prepare_frames(dataset, config.model.image_size, cache, progress=progress,
                                           workers=config.data.workers)
    if dist.is_initialized():
        dist.barrier()
    if rank != 0:
        data = prepare_frames(dataset, config.model.image_size, cache, progress=False)
    vocabulary = [dataset.class_names[i] for i in dataset.base_ids] if config.data.classes == "base" \
        else dataset.class_names[1:]
    lookup = label_lookup(data.class_names, vocabulary)
    frames = data.frame_index()

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    model = build_model(config.model).to(device)
    forward = _TrainingForward(model)
    if world > 1:
        forward = nn.parallel.DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda"
                                                      else None, find_unused_parameters=True)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg), weight_decay=cfg.weight_decay)
    use_amp = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)

    step, trained_seconds = 0, 0.0
    last = out / "last.pt"
    if rank == 0:
        _remove_orphan_checkpoints(out)
    if config.init is not None and not last.is_file():
        _warm_start(model, config.init, config.model)
    if last.is_file():
        payload = read_checkpoint(last)
        if payload.get("train_config", {}).get("model") != dataclasses.asdict(config.model):
            raise ValueError(f"{last} was trained with another model config; use a new --out or delete it")
        try:
            model.load_state_dict(payload["model"])
        except RuntimeError as error:
            raise ValueError(f"{last} does not fit this code's model (was it trained by another version?); "
                             f"use a new --out or delete it. {str(error).splitlines()[-1].strip()}") from None
        optimizer.load_state_dict(payload["optimizer"])
        if scaler.is_enabled():
            scaler.load_state_dict(payload["scaler"])
        step = int(payload["step"])
        trained_seconds = float(payload.get("train_seconds", 0.0))
        if rank == 0:
            _drop_log_after(out / "log.jsonl", step)
            print(f"resuming {out} from step {step}")

    def save(path: Path) -> None:
        if rank == 0:
            save_checkpoint(path, model, {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                          "step": step, "train_seconds": seconds_so_far(), "train_config": config.to_dict(), "vocabulary": vocabulary})

    started = time.monotonic()

    def seconds_so_far() -> float:
        return trained_seconds + time.monotonic() - started

    def request_stop(signum: int, _frame: Any) -> None:
        raise _StopRequested(signum)

    previous_handler = signal.signal(signal.SIGTERM, request_stop) if rank == 0 else None
    log = open(out / "log.jsonl", "a", encoding="utf-8") if rank == 0 else None
    bar = tqdm(total=cfg.steps, initial=step, desc="training", unit="step", disable=not progress or rank != 0)
    model.train()
    tic, since = time.perf_counter(), step
    try:
        while step < cfg.steps and _schedule_progress(step, cfg, seconds_so_far()) < 1.0:
            rng = np.random.default_rng([cfg.seed, step, rank])
            pairs = frames[rng.integers(len(frames), size=cfg.batch_size)]
            flip = rng.random(cfg.batch_size) < 0.5 if cfg.flip else None
            batch = make_batch(data, pairs, lookup, flip).to(device)
            scenes = [s if rng.random() >= cfg.scene_dropout else None for s in batch.scenes]
            factor = _learning_rate_factor(step, cfg.warmup_steps, _schedule_progress(step, cfg, seconds_so_far()))
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                output, classes = forward(batch, vocabulary, scenes)
            loss, parts = total_loss(_float_output(output), classes.float(), batch.targets, batch.flow, batch.previous,
                                     batch.current, config.loss, cfg.mask_size)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == cfg.steps:
                seconds = (time.perf_counter() - tic) / max(1, step - since)
                tic, since = time.perf_counter(), step
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", frames_s=f"{cfg.batch_size * world / seconds:.1f}")
                if log is not None:
                    record = {"step": step, "loss": float(loss.detach()), **parts, "lr": cfg.lr * factor,
                              "seconds_per_step": seconds, "time": time.time()}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
            if step % config.checkpoint_every == 0:
                save(last)
    except (KeyboardInterrupt, _StopRequested):
        save(last)
        if rank == 0:
            print(f"\ninterrupted at step {step}: saved {last}; run the same command again to resume")
        raise SystemExit(130)
    finally:
        bar.close()
        if log is not None:
            log.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    save(last)
    final = out / "model.pt"
    if rank == 0 and step < cfg.steps:
        print(f"time budget of {cfg.minutes:g} minutes reached at step {step} of {cfg.steps}")
    if rank == 0:
        save_checkpoint(final, model, {"step": step, "train_config": config.to_dict(), "vocabulary": vocabulary})
    if dist.is_initialized():
        dist.barrier()
    return final


# Switches a warm start may turn on: each only adds parameters, which start from their initial values.
_WARM_START_ADDITIONS = {"use_heard_gate": ("mask_decoder.heard_weight",)}


def _warm_start(model: SSPOV, checkpoint: str, config: ModelConfig) -> None:
    """Load the weights of ``checkpoint`` into a fresh run's model, in float32.

    The architecture must be the same, except for switches in ``_WARM_START_ADDITIONS``
    turned on here: their new parameters keep their initial values.
    """
    payload = read_checkpoint(checkpoint)
    theirs = dataclasses.asdict(ModelConfig.from_dict({**payload["config"],
                                                       "pretrained_backbone": config.pretrained_backbone}))
    mine = dataclasses.asdict(config)
    added = {key for key in mine if theirs[key] != mine[key]}
    if not added <= set(_WARM_START_ADDITIONS) or any(theirs[key] for key in added):
        raise ValueError(f"init checkpoint {checkpoint} has another model config ({sorted(added)} differ); "
                         f"warm start needs the same one, or only {sorted(_WARM_START_ADDITIONS)} turned on")
    device = next(model.parameters()).device
    result = model.load_state_dict({k: v.float().to(device) if v.is_floating_point() else v.to(device)
                                    for k, v in payload["model"].items()}, strict=False)
    allowed = {name for key in added for name in _WARM_START_ADDITIONS[key]}
    if result.unexpected_keys or set(result.missing_keys) - allowed:
        raise ValueError(f"init checkpoint {checkpoint} does not fit the model: missing "
                         f"{sorted(set(result.missing_keys) - allowed)[:3]}, unexpected {result.unexpected_keys[:3]}")


def _float_output(output: ForwardOutput) -> ForwardOutput:
    """Losses in float32 whatever the autocast dtype of the forward."""
    decoder = type(output.decoder)(*(t.float() for t in output.decoder))
    post = None if output.post_mask is None else output.post_mask.float()
    return ForwardOutput(output.flow.float(), decoder, post)


def _remove_orphan_checkpoints(out: Path) -> None:
    """Delete ``.<name>.pt.<pid>.tmp`` files whose writing process is gone (killed mid-write)."""
    for path in out.glob(".*.pt.*.tmp"):
        pid = path.name.split(".")[-2]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _drop_log_after(path: Path, step: int) -> None:
    """Keep the log lines of steps up to ``step`` (the resumed checkpoint); later ones are run again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the kill
    write_atomic(path, "".join(kept).encode("utf-8"))
