"""Encoder families: what tasklight knows of each Hugging Face encoder layout it loads.

A family is one module of this package that registers a ``Family``: the ``model_type`` of its
``config.json``, the key prefix of its ``...For*`` classes, the mapping from its config to
``EncoderConfig`` fields, how its state-dict keys map onto BERT's (the layout
``framework.convert`` reads), and where its masked-LM checkpoints keep their head. Every module
here is imported by ``load_families`` (no registration that depends on an import happening
elsewhere), so adding a family is adding its module (docs/families.md).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from framework.errors import UserError, closest

State = dict[str, torch.Tensor]
Source = str | tuple[str, ...]  # one tensor name, or several concatenated on dim 0 (q, k, v)


@dataclass(frozen=True)
class Names:
    """Where a family's checkpoints keep each module of ``framework.encoder.Encoder``: ours ->
    theirs, for the modules outside the layers (``top``) and in layer i (``layer_prefix``
    formatted with i, then ``layer``). A tuple of sources is one of our fused Linears (q, k, v;
    a gated MLP's activated and linear halves), split back in equal parts on export; a source
    ``name@k/n`` is the k-th of n equal parts (dim 0) of their tensor ``name``."""

    top: dict[str, Source]
    layer_prefix: str
    layer: dict[str, Source]

    def theirs(self, module: str) -> Source:
        """Their name(s) of our module ``module`` (``layers.3.qkv``, ``embeddings.norm``)."""
        if module.startswith("layers."):
            _, i, name = module.split(".", 2)
            pre = self.layer_prefix.format(i=i)
            source = self.layer[name]
            return pre + source if isinstance(source, str) else tuple(pre + s for s in source)
        return self.top[module]


@dataclass(frozen=True)
class Family:
    model_type: str  # config.json's "model_type"
    prefix: str  # key prefix of the family's ...For* classes (their base_model_prefix)
    # config.json dict -> EncoderConfig fields
    encoder_config: Callable[[dict], dict]
    # the family's keys (prefix removed) -> BertModel keys; None: ``names`` reads them as they are
    to_bert_keys: Callable[[State, int], State] | None = None
    # where its masked-LM checkpoints keep the head: (dense, LayerNorm, output bias, decoder
    # weight) key prefixes; None: no masked-LM head of its own
    mlm_head: tuple[str, str, str, str] | None = None
    # its tensor names (after ``to_bert_keys``); None: BERT's (``framework.families.bert``)
    names: Names | None = None
    # more key prefixes its checkpoints use (GTE's hub files: ``new.``)
    aliases: tuple[str, ...] = ()
    # -- export in its own layout (None: exported as BERT, ``framework.convert.config_to_hf``) --
    # EncoderConfig -> its config.json dict
    hf_config: Callable[[Any], dict] | None = None
    # a task's BERT class (``Task.hf_export``) -> its own; a class missing here: encoder only
    classes: dict[str, str] = dataclasses.field(default_factory=dict)
    # a task's BERT head-tensor prefixes -> its own (``bert.`` encoder keys are renamed by
    # ``names`` under ``prefix``)
    heads: dict[str, str] = dataclasses.field(default_factory=dict)
    # EncoderConfig -> the ``framework.heads.HeadStyle`` of its task heads; None: BERT's
    head_style: Callable[[Any], Any] | None = None


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    if family.model_type in _FAMILIES:
        raise ValueError(f"encoder family {family.model_type!r} is registered twice")
    if family.hf_config is not None and "BertModel" not in family.classes:
        raise ValueError(
            f"encoder family {family.model_type!r} exports in its own layout (hf_config) but "
            "names no base-model class: classes['BertModel']"
        )
    _FAMILIES[family.model_type] = family
    return family


def load_families() -> dict[str, Family]:
    """Every family of this package, by model_type (its modules imported once)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(sorted(_FAMILIES.items()))


def get_family(model_type: str | None, source: str = "the checkpoint") -> Family:
    """The family of ``model_type``; a one-line ``UserError`` naming the supported ones."""
    families = load_families()
    if model_type in families:
        return families[model_type]
    close = closest(model_type, families)
    hint = f" (did you mean {close!r}?)" if close else ""
    raise UserError(
        f"{source} is a {model_type!r} model{hint}; the fused encoder loads these encoder "
        f"families: {', '.join(families)}"
    )
