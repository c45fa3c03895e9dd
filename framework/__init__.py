"""tasklight: a Lightning-based training framework for BERT-family encoders with pluggable tasks."""

__version__ = "0.1.0"
