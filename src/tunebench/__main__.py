"""``python -m tunebench``: the workflow's rules call the CLI this way, through the interpreter that
runs Snakemake, so that they work without the venv's bin/ on PATH."""

import sys

from .commands.cli import main

sys.exit(main())
