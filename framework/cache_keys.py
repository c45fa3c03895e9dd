"""Cache keys of encoded splits: a changed source file, subset, tokenizer, task option or
encoding code never reads stale features from the cache."""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from typing import Any

from framework.task import Task


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


def encoding_version(task: Task) -> str:
    """A hash of the code that turns the task's rows into features: the source of the task's
    module and of its ``encode`` (which may live elsewhere, e.g. a subclass or a patch), and the
    versions of the tokenizer libraries."""
    import tokenizers
    import transformers

    parts = [tokenizers.__version__, transformers.__version__]
    for obj in (sys.modules.get(type(task).__module__), type(task).encode):
        try:
            parts.append(inspect.getsource(obj))
        except (OSError, TypeError):  # no source (built in, frozen): its qualified name
            parts.append(getattr(obj, "__qualname__", repr(obj)))
    return fingerprint(*parts)


def encoding_inputs(task: Task, tokenizer: Any, max_length: int) -> dict[str, Any]:
    """Everything but the source and the subset that decides a split's features, readable (a
    prepared manifest records it): the tokenizer (two trained vocabularies differ in their
    vocabulary), the maximum length, the task's name and options (underscore attributes are
    derived, not part of the key; after ``setup``, what it learned), and its encoding code."""
    vocab = sorted(tokenizer.get_vocab().items())
    # The whole fast tokenizer (normalizer, pre-tokenizer, post-processor...), not only its
    # vocabulary: a tokenizer.json edited in place (lowercasing switched off) encodes otherwise.
    # Its truncation and padding are the last call's settings, not the tokenizer's: left out.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    whole = repr(tokenizer.init_kwargs)
    if backend is not None:
        spec = json.loads(backend.to_str())
        whole = {k: v for k, v in spec.items() if k not in ("truncation", "padding")}
    return {
        "tokenizer": [
            tokenizer.name_or_path,
            type(tokenizer).__name__,
            fingerprint(vocab),
            fingerprint(whole),
        ],
        "max_length": max_length,
        "task": task.name,
        "task_options": {k: repr(v) for k, v in sorted(vars(task).items()) if k[0] != "_"},
        "code": encoding_version(task),
    }
