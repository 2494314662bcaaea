"""``equipot train CONFIG.yaml [section.key=value ...] [--resume RUN_DIR]``."""
from __future__ import annotations

import argparse

HELP = "train a potential from a YAML config (with section.key=value overrides)"

EXAMPLES = """\
examples:
  equipot train config.yaml
  equipot train config.yaml model.hidden=128 train.lr=5e-4 train.run_dir=runs/h128
  equipot train data.train_file=ethanol.h5 data.train_split=train model.cutoff=5.0
  equipot train --resume runs/h128                    (continue a killed or interrupted run)
  equipot train --resume runs/h128 train.epochs=300   (extend a run, finished or not, to 300 epochs)
  equipot train --resume runs/h128 train.max_time=2h  (... or to 2 hours of training in all)
  torchrun --nproc_per_node 4 -m equipot.cli train config.yaml train.device=cuda

config keys (section.key = default: meaning; units in brackets):
"""


def _formatter():
    from .main import HelpFormatter

    class Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    return Formatter


def configure(parser: argparse.ArgumentParser) -> None:
    from ..training.config import describe_config

    parser.formatter_class = _formatter()
    parser.epilog = EXAMPLES + describe_config()
    parser.add_argument("items", nargs="*", metavar="CONFIG|KEY=VALUE",
                        help="a YAML config file (optional) followed by section.key=value overrides")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the run in RUN_DIR from its checkpoint.pt (its config.yaml is used; "
                             "overrides still apply)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (the same as train.threads=N; default: every available core)")


def split_items(items: list[str]) -> tuple[str | None, list[str]]:
    """(config file or None, overrides) from the positional arguments."""
    config, overrides = None, []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif config is None and not overrides:
            config = item
        else:
            raise ValueError(f"unexpected argument {item!r}: give one config file first, then section.key=value "
                             f"overrides")
    return config, overrides


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..training.config import config_to_dict, load_config, resume_config
    from ..training.trainer import train

    config_path, overrides = split_items(args.items)
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    if args.resume is not None:
        if config_path is not None:
            raise ValueError("with --resume the run's own config.yaml is used; pass only overrides")
        config = resume_config(args.resume, overrides)
    else:
        config = load_config(config_path, overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
        return 0
    train(config, resume=args.resume is not None)
    return 0
