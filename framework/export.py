"""Export a trained encoder + head to a Hugging Face model directory.

The directory holds ``config.json`` (with the label names), ``model.safetensors`` and the
tokenizer; ``transformers`` loads it with the task's ``AutoModelFor...`` class, or, for a task that
declares none (``Task.hf_export`` returns None), holds the encoder alone (``AutoModel``,
``BertModel``) and the head stays in the run's checkpoints. It is written to a temporary sibling
first and renamed, so a crash never leaves a half-written export.

Every export is BERT-layout (``BertFor...``), whatever family the encoder came from: RoBERTa and
DistilBERT weights convert exactly (``framework.convert.config_to_hf``); an ELECTRA-small-style
encoder (factorised embeddings) has no BERT layout and is not exported.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from transformers import AutoConfig

from framework.convert import config_to_hf, tasklight_to_hf
from framework.errors import UserError
from framework.module import TaskModule


def export_hf(module: TaskModule, tokenizer: Any, out_dir: str | Path) -> Path:
    """Write ``module`` as a Hugging Face model directory at ``out_dir`` (replacing it)."""
    out_dir = Path(out_dir)
    enc = module.encoder
    try:
        hf_encoder_config = config_to_hf(enc.cfg)
    except ValueError as e:
        raise UserError(f"no Hugging Face export: {e}") from None
    hf_encoder_state = tasklight_to_hf(
        enc.state_dict(), enc.cfg, position_offset=enc.cfg.position_offset
    )
    exported = module.task.hf_export(hf_encoder_config, hf_encoder_state, module.head)
    if exported is None:
        warnings.warn(
            f"task {module.task.name!r} declares no transformers AutoModelFor... class: the export "
            f"holds the encoder (AutoModel) and the tokenizer; its head stays in checkpoints/",
            stacklevel=2,
        )
        exported = {**hf_encoder_config, "architectures": ["BertModel"]}, hf_encoder_state
    config, state = dict(exported[0]), exported[1]
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
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
