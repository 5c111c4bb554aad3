"""``tunebench fetch``: stage every hub model and dataset of a config for offline jobs."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config as tb_config
from ._run_args import add_config_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "fetch",
        help="download every hub model and dataset the config needs into one hub cache",
        description=(
            "Download every hub model and dataset the config's experiments need, at their configured revisions, "
            "into HF_HOME/hub (items already there are not downloaded again). Jobs then run with HF_HUB_OFFLINE=1."
        ),
    )
    add_config_argument(parser)
    parser.add_argument(
        "--hf-home",
        type=Path,
        metavar="DIR",
        help="the shared HF_HOME to fill (default: the config's hf_home, else the HF_HOME environment variable)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..util import staging

    config = tb_config.load(args.config)
    hf_home = args.hf_home or config.get("hf_home")
    needed = staging.items(config, config.finetune, config.baselines, tb_config.data_mirror(config))
    done = staging.fetch(needed, hf_home)
    print(
        f"staged {len(done['cached']) + len(done['downloaded'])} items in {staging.hub_cache(hf_home)}: "
        f"{len(done['downloaded'])} downloaded, {len(done['cached'])} already cached"
    )
    return 0
