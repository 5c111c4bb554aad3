# tunebench: fine-tuned small models against prompted large ones, on the case-study tasks.
#   snakemake --cores all                                   the paper matrix (config/config.yaml)
#   snakemake --cores all --configfile config/demo.yaml     the CPU demo
#   snakemake --profile profiles/slurm                      the same on a SLURM GPU cluster
from pathlib import Path
import sys

from snakemake.utils import min_version

from tunebench.config import read_yaml
from tunebench.util.errors import ConfigError

min_version("9.0")

# The paper matrix's config: the working directory's, else the repository's (--directory elsewhere).
DEFAULT_CONFIG = (
    "config/config.yaml"
    if Path("config/config.yaml").is_file()
    else str(Path(workflow.basedir) / "config" / "config.yaml")
)


# The paper matrix unless the command line names other config files (which then replace it); a run
# outside the repository finds it instead of stopping. tunebench's reader goes first: Snakemake's says
# "not valid JSON or YAML" without file or line, and keeps a repeated key silently.
if not workflow.overwrite_configfiles:
    try:
        read_yaml(Path(DEFAULT_CONFIG))
    except ConfigError as error:
        sys.exit(f"tunebench: {error}")

    configfile: DEFAULT_CONFIG


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


# With --sdm apptainer (profiles/slurm) every job runs in the suite's pinned image, the config's
# `container` (a docker:// reference or a .sif file; README "Running in a container"); without
# it, jobs use the current environment. Set after common.smk, whose validation fills the default.
container: config["container"]


include: "workflow/rules/settings.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/results.smk"
include: "workflow/rules/paper.smk"


rule all:
    default_target: True
    input:
        all_targets(),
