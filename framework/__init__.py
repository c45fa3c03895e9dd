"""tasklight: a Lightning-based training framework for BERT-family encoders with pluggable tasks."""

import warnings

__version__ = "0.1.0"

# Lightning 2.6's copy of torch's pytree flattening builds ``LeafSpec()``, which torch >= 2.10
# deprecates: harmless, and printed on every run. Only that one message is silenced.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
