"""Load Hugging Face BERT-family checkpoints (local directory or hub id) into ``Encoder``:
the families of ``framework.families`` (BERT and MiniLM, RoBERTa, XLM-RoBERTa, DistilBERT,
ELECTRA's discriminator).

Files are located with ``huggingface_hub`` (hub ids, with its cache; works offline once cached,
and with ``HF_HUB_OFFLINE=1``) or read from a local directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from framework.convert import config_from_hf, hf_to_tasklight
from framework.encoder import AttnImpl, Encoder
from framework.errors import UserError
from framework.families import get_family

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _local_or_hub_file(name_or_path: str, filename: str) -> Path | None:
    """Path of ``filename`` in a local directory or hub repo; None when the repo lacks it."""
    if os.path.isdir(name_or_path):
        p = Path(name_or_path) / filename
        return p if p.is_file() else None
    if os.path.exists(name_or_path) or name_or_path.startswith((".", "/", "~")):
        raise UserError(
            f"model path {name_or_path!r} is not a directory; point model.name_or_path at a "
            "directory holding config.json and model.safetensors, or at a hub id"
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(name_or_path, filename))
    except LocalEntryNotFoundError as e:  # offline and not cached (a subclass of the next one)
        raise UserError(
            f"cannot fetch {filename} of {name_or_path!r}: offline (HF_HUB_OFFLINE) and not in the "
            "local Hugging Face cache; use a local checkpoint directory for model.name_or_path"
        ) from e
    except EntryNotFoundError:
        return None
    except Exception as e:  # offline, unknown repo, no network: one clear line
        raise UserError(
            f"cannot fetch {filename} of {name_or_path!r} from the Hugging Face Hub "
            f"({type(e).__name__}); use a local checkpoint directory for model.name_or_path"
        ) from e


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from framework.resume import load_checkpoint

    # Not memory-mapped: the pytorch_model.bin of older checkpoints predates the zip format.
    return load_checkpoint(path, "model weights", mmap=False)


def load_pretrained(
    name_or_path: str, attn_impl: AttnImpl = "sdpa", **overrides: object
) -> tuple[Encoder, dict[str, torch.Tensor]]:
    """Encoder with the checkpoint's weights, and the checkpoint's other tensors (``pooler.*``...).

    ``overrides`` replace ``EncoderConfig`` fields read from ``config.json`` (e.g. dropout).
    """
    config_file = _local_or_hub_file(name_or_path, "config.json")
    if config_file is None:
        raise UserError(f"{name_or_path!r} has no config.json; it is not a Hugging Face model")
    hf_config = json.loads(config_file.read_text())
    model_type = hf_config.get("model_type")
    get_family(model_type, repr(name_or_path))  # a one-line refusal naming the families
    weights, first_error = None, None
    for filename in WEIGHT_FILES:  # a cached repo may hold only one of them
        try:
            weights = _local_or_hub_file(name_or_path, filename)
        except UserError as e:
            first_error = first_error or e
        if weights is not None:
            break
    if weights is None and first_error is not None:
        raise first_error
    if weights is None:
        raise UserError(
            f"{name_or_path!r} has a config.json but no weights ({' or '.join(WEIGHT_FILES)}); "
            "point model.name_or_path at a complete checkpoint directory"
        )
    try:
        cfg = config_from_hf(hf_config)
        if overrides:
            import dataclasses

            cfg = dataclasses.replace(cfg, **overrides)
    except (KeyError, TypeError, ValueError) as e:  # a field missing, of the wrong type...
        what = f"has no {e}" if isinstance(e, KeyError) else f"is not valid: {e}"
        raise UserError(
            f"the config.json of {name_or_path!r} {what}; fix it (or use the model's own)"
        ) from None
    encoder = Encoder(cfg, attn_impl=attn_impl)
    try:
        ours, rest = hf_to_tasklight(read_state_dict(weights), cfg, model_type)
    except KeyError as e:
        raise UserError(f"{weights} is not a {model_type} checkpoint: missing tensor {e}") from e
    except ValueError as e:
        raise UserError(
            f"{name_or_path!r} does not match its config.json: {e}; make config.json describe "
            "the weights"
        ) from None
    encoder.load_state_dict(ours, strict=True)
    return encoder, rest


def build_encoder(
    name_or_path: str | None,
    preset_name: str | None,
    attn_impl: AttnImpl = "sdpa",
    vocab_size: int | None = None,
    attention_dropout: float = 0.0,
    hidden_dropout: float | None = None,
    init_from: str | None = None,
    from_scratch: bool = False,
) -> tuple[Encoder, dict[str, torch.Tensor]]:
    """A pretrained encoder (``init_from``, else ``name_or_path``) or a freshly initialised one
    (``preset_name``). ``hidden_dropout=None`` keeps the checkpoint's (or the preset's) value.
    ``from_scratch``: the architecture of ``init_from`` with fresh weights (the ablation of
    pretraining: same shapes and tokenizer, nothing learned).
    """
    drop = {"attention_dropout": attention_dropout}
    if hidden_dropout is not None:
        drop["hidden_dropout"] = hidden_dropout
    for key, value in drop.items():
        if not 0.0 <= value < 1.0:
            raise UserError(f"model.{key} must be in [0, 1), got {value}")
    if attn_impl not in ("sdpa", "math"):
        raise UserError(
            f"model.attn_impl must be sdpa (fused) or math (reference), not {attn_impl!r}"
        )
    if from_scratch and not init_from:
        raise UserError("model.from_scratch=true takes the architecture of model.init_from: set it")
    if init_from and from_scratch:
        import dataclasses

        model_dir, _ = resolve_init_from(init_from)
        cfg = config_from_hf(json.loads((model_dir / "config.json").read_text()))
        return Encoder(dataclasses.replace(cfg, **drop), attn_impl=attn_impl), {}
    if init_from:
        encoder, extra, _ = load_init_from(init_from, attn_impl, **drop)
        return encoder, extra
    if name_or_path:
        return load_pretrained(name_or_path, attn_impl, **drop)
    if not preset_name:
        raise UserError("set model.name_or_path (a checkpoint) or model.preset (random init)")
    from framework.presets import preset

    try:
        sizes = {"vocab_size": vocab_size} if vocab_size else {}
        cfg = preset(preset_name, **drop, **sizes)
    except ValueError as e:
        raise UserError(f"model.preset: {e}") from None
    return Encoder(cfg, attn_impl=attn_impl), {}


def encoder_from_record(record: dict, attn_impl: AttnImpl = "sdpa", **overrides: object) -> Encoder:
    """A fresh encoder of the architecture a checkpoint recorded (``encoder_config``: the
    ``EncoderConfig`` as trained); ``overrides`` (dropouts) replace recorded values."""
    import dataclasses

    from framework.encoder import EncoderConfig

    known = {f.name for f in dataclasses.fields(EncoderConfig)}
    unknown = sorted(set(record) - known)
    if unknown:
        raise UserError(
            f"the checkpoint's encoder has settings this tasklight does not know "
            f"({', '.join(unknown)}): it was written by a newer version; upgrade tasklight"
        )
    try:
        cfg = EncoderConfig(**{**record, **overrides})
    except (TypeError, ValueError) as e:
        raise UserError(f"the checkpoint's encoder_config is not valid: {e}") from None
    return Encoder(cfg, attn_impl=attn_impl)


def resolve_init_from(init_from: str) -> tuple[Path, Path | None]:
    """``model.init_from`` -> (Hugging Face model directory, Lightning checkpoint or None).

    A run directory gives its ``export/`` (the best checkpoint, with its tokenizer); a
    ``.ckpt`` file gives the export of its run for the architecture and tokenizer, and its own
    encoder weights.
    """
    path = Path(init_from).expanduser()
    if path.is_file() and path.suffix == ".ckpt":
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        if not (run_dir / "export" / "config.json").is_file():
            raise UserError(
                f"model.init_from={init_from}: no export/ in its run directory {run_dir} to take "
                "the architecture and tokenizer from; point model.init_from at a finished run"
            )
        return run_dir / "export", path
    for candidate in (path / "export", path):
        if (candidate / "config.json").is_file():
            return candidate, None
    raise UserError(
        f"model.init_from={init_from} is neither a run directory with export/ nor a .ckpt "
        "file; point it at the directory a pretraining run printed at its end"
    )


def load_init_from(
    init_from: str, attn_impl: AttnImpl = "sdpa", **overrides: object
) -> tuple[Encoder, dict[str, torch.Tensor], Path]:
    """(encoder, other checkpoint tensors, tokenizer directory) of ``model.init_from``."""
    model_dir, ckpt = resolve_init_from(init_from)
    encoder, extra = load_pretrained(str(model_dir), attn_impl, **overrides)
    if ckpt is not None:
        from framework.resume import load_checkpoint

        try:
            state = load_checkpoint(ckpt, "model.init_from")["state_dict"]
        except (KeyError, TypeError):
            raise UserError(f"model.init_from={init_from} has no state_dict") from None
        enc = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        try:
            encoder.load_state_dict(enc, strict=True)
        except RuntimeError as e:
            raise UserError(
                f"model.init_from={init_from}: its encoder does not match its run's export "
                f"({str(e).splitlines()[0]})"
            ) from None
    return encoder, extra, model_dir
