"""tasklight: a Lightning-based training framework for BERT-family encoders with pluggable tasks."""

import logging
import warnings

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
