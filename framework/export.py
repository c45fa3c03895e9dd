"""Export a trained encoder + head to a Hugging Face model directory.

The directory holds ``config.json`` (with the label names), ``model.safetensors`` and the
tokenizer; ``transformers`` loads it with the task's ``AutoModelFor...`` class, or, for a task that
declares none (``Task.hf_export`` returns None), holds the encoder alone (``AutoModel``,
``BertModel``) and the head stays in the run's checkpoints. It is written to a temporary sibling
first and renamed, so a crash never leaves a half-written export.

The BERT-shaped families export as BERT (``BertFor...``): RoBERTa and DistilBERT weights
convert exactly (``framework.convert.config_to_hf``); an ELECTRA-small-style encoder (factorised
embeddings) has no BERT layout and is not exported. A family with a layout of its own
(``Family.hf_config``: ModernBERT, GTE, NomicBERT) exports in it: its class for the task
(``Family.classes``), or its base model when it has none for the task's head.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import AutoConfig

from framework.convert import config_to_hf, tasklight_to_hf
from framework.errors import UserError
from framework.families import Family, get_family
from framework.fileio import publish_dir
from framework.module import TaskModule


def _assemble(module: TaskModule) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json dict, state dict) of the export: the task's ``BertFor...`` (``hf_export``),
    as it is for the BERT-shaped families, or renamed into the family's own layout (its class,
    key prefix, tensor and head names); the encoder alone when there is no such class."""
    enc, task = module.encoder, module.task
    fam = get_family(enc.cfg.family)
    try:
        own = fam.hf_config is not None
        hf_config = fam.hf_config(enc.cfg) if own else config_to_hf(enc.cfg)
    except ValueError as e:
        raise UserError(f"no Hugging Face export: {e}") from None
    state = enc.state_dict()
    if own:  # the task sees our names under ``bert.``; ``_renamed`` renames them
        base, base_class = tasklight_to_hf(state, enc.cfg, fam.names), fam.classes["BertModel"]
    else:
        state = tasklight_to_hf(state, enc.cfg, position_offset=enc.cfg.position_offset)
        base, base_class = state, "BertModel"
    exported = task.hf_export(hf_config, state, module.head)
    why = f"task {task.name!r} declares no transformers AutoModelFor... class"
    if exported is not None and own:
        arch = exported[0]["architectures"][0]
        if arch == "BertModel":  # the encoder alone (keys without a prefix)
            exported = {**exported[0], "architectures": [base_class]}, base
        elif arch in fam.classes:
            exported = _renamed(exported, fam, enc.cfg, set(enc.state_dict()))
        else:
            why, exported = f"{enc.cfg.family} has no counterpart of {arch} for its heads", None
    if exported is None:
        warnings.warn(
            f"{why}: the export holds the encoder ({base_class}, AutoModel) and the tokenizer; "
            "the task head stays in checkpoints/",
            stacklevel=3,
        )
        return {**hf_config, "architectures": [base_class]}, base
    return exported


def _renamed(
    exported: tuple[dict, dict], fam: Family, cfg: Any, encoder_keys: set[str]
) -> tuple[dict, dict]:
    """A task's ``BertFor...`` export over our encoder names (``bert.`` + ``encoder_keys``), in
    ``fam``'s own layout: its class, prefix and tensor names; head tensors by ``fam.heads``."""
    config, state = exported
    config = {**config, "architectures": [fam.classes[config["architectures"][0]]]}
    ours = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
    encoder = {k: v for k, v in ours.items() if k in encoder_keys}
    out = {f"{fam.prefix}.{k}": v for k, v in tasklight_to_hf(encoder, cfg, fam.names).items()}
    for key, value in state.items():
        if key.startswith("bert.") and key.removeprefix("bert.") in encoder:
            continue
        for bert, theirs in fam.heads.items():
            if key.startswith(bert):
                key = theirs + key.removeprefix(bert)
                break
        out[key] = value
    return config, out


def export_hf(module: TaskModule, tokenizer: Any, out_dir: str | Path) -> Path:
    """Write ``module`` as a Hugging Face model directory at ``out_dir`` (replacing it)."""
    out_dir = Path(out_dir)
    config, state = _assemble(module)
    config = dict(config)
    hf_config = AutoConfig.for_model(config.pop("model_type"), **config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        hf_config.save_pretrained(tmp)
        # clone: safetensors refuses tensors that share memory (tied or chunked weights)
        save_file(
            {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()},
            str(tmp / "model.safetensors"),
            metadata={"format": "pt"},
        )
        tokenizer.save_pretrained(tmp)
        for name, text in module.task.export_files(config).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)
        publish_dir(tmp)  # mkdtemp's 0700 would keep a shared model from its readers
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
