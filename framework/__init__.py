"""tasklight: a Lightning-based training framework for BERT-family encoders with pluggable tasks."""

import os
import sys

# `python -m framework.predict|evaluate` runs inside shared run directories, and `python -m` puts
# the working folder first on sys.path: it is dropped here, before anything else is imported, so
# that no file there (a `tasks/`, an `omegaconf.py`) is imported as a module. Training keeps it
# (task=my_tasks.module:Class names the user's own code); tasklight-predict and
# tasklight-evaluate never add it; PYTHONPATH=. adds it on purpose. A package the user names
# (task_packages=my_tasks) is still looked up there, after the installed ones (framework.runs).
_argv = getattr(sys, "orig_argv", [])
DROPPED_FOLDER: str | None = None
if "-m" in _argv[:-1] and sys.argv[:1] == ["-m"] and sys.path[:1] in ([""], [os.getcwd()]):
    if _argv[_argv.index("-m") + 1] in ("framework.predict", "framework.evaluate"):
        DROPPED_FOLDER = sys.path.pop(0) or os.getcwd()

import logging  # noqa: E402
import warnings  # noqa: E402

__version__ = "0.1.0"

# Lightning 2.6's copy of torch's pytree flattening builds ``LeafSpec()``, which torch >= 2.10
# deprecates: harmless, and printed on every run. Only that one message is silenced.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


# Lightning 2.6 logs an advertisement ("Tip: ... litlogger", "... litmodels") on every run: only
# those records are dropped, from the loggers its rank-zero messages go through.
def _no_tips(record: logging.LogRecord) -> bool:
    return "Tip: For seamless cloud" not in str(record.msg)


for _name in ("lightning_utilities.core.rank_zero", "lightning.fabric.utilities.rank_zero",
              "lightning.pytorch.utilities.rank_zero"):  # fmt: skip
    logging.getLogger(_name).addFilter(_no_tips)
