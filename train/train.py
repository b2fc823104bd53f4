"""Train SSP-OV: ``python train/train.py --config train/configs/default.yaml``.

Run it again with the same ``--out`` to resume after a kill; ``--set section.key=value``
overrides any config value (for example ``--set optim.steps=200 --set model.use_vta=false``).
With several GPUs: ``torchrun --nproc_per_node N train/train.py --config ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import yaml

from avss_sdk.training.trainer import TrainConfig, train


def load_config(path: str | None, overrides: list[str], out: str | None = None) -> TrainConfig:
    """A TrainConfig from a YAML file plus ``section.key=value`` overrides (values parsed as YAML)."""
    values: dict = {}
    if path is not None:
        config_path = Path(path)
        if not config_path.is_file():
            raise SystemExit(f"config not found: {config_path}")
        values = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects section.key=value, got {item!r}")
        *sections, leaf = key.split(".")
        node = values
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = yaml.safe_load(raw)
    if out is not None:
        values["out"] = out
    try:
        config = TrainConfig.from_dict(values)
        check_types(config)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"bad config: {error}") from None
    return config


def check_types(config: object, prefix: str = "") -> None:
    """ValueError naming the key when a value's type differs from its default's (``optim.steps=abc``)."""
    for field in dataclasses.fields(config):
        value, default = getattr(config, field.name), field.default
        if dataclasses.is_dataclass(value):
            check_types(value, f"{prefix}{field.name}.")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{prefix}{field.name} must be true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{prefix}{field.name} must be a whole number, got {value!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (sections: model, data, optim, loss; and out)")
    parser.add_argument("--out", help="run folder: checkpoints and log (overrides the config's 'out')")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set, args.out)
    try:
        final = train(config, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    if os.environ.get("RANK", "0") == "0":
        print(f"model written to {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
