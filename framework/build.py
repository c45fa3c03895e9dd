"""Everything a training run is made of, built from its config: tokenizer, data module (splits
encoded), encoder, task and the generic module. ``framework.train`` fits what this builds."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from framework.errors import UserError


def apply_task_defaults(cfg: DictConfig) -> None:
    """Import the task packages, find ``cfg.task.name`` and fill a ``task.monitor`` /
    ``task.mode`` the config leaves null (a task without a YAML) from its class."""
    from omegaconf import open_dict

    from framework.registry import get_task, import_task_packages

    import_task_packages(cfg.task_packages)
    cls = get_task(cfg.task.name)
    with open_dict(cfg.task):
        for key in ("monitor", "mode"):
            if cfg.task.get(key) is None:
                cfg.task[key] = getattr(cls, key)


def build_data(cfg: DictConfig) -> tuple:
    """(tokenizer, data module) as configured; no split read or prepared yet."""
    from transformers import AutoTokenizer

    from framework.data import DataModule
    from framework.pretrained import resolve_init_from
    from framework.registry import build_task, import_task_packages
    from framework.tokenizer import run_tokenizer

    m = cfg.model
    init_from = m.get("init_from")
    import_task_packages(cfg.task_packages)
    task = build_task(cfg.task)
    data_args = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = DataModule(task, None, seed=cfg.seed, **data_args)
    if m.get("train_tokenizer"):
        tok_path = str(run_tokenizer(cfg, datamodule))
    elif init_from:  # the run's tokenizer goes with its encoder (model.tokenizer is not read)
        tok_path = str(resolve_init_from(init_from)[0])
    else:
        tok_path = m.tokenizer or m.name_or_path
    if not tok_path:
        raise UserError("set model.tokenizer (a tokenizer directory or hub id) for model.preset")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_path, use_fast=True)
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot load a tokenizer from {tok_path!r}: {str(e).splitlines()[0]}"
        ) from e
    check_tokenizer(tokenizer, tok_path)
    datamodule.tokenizer = tokenizer
    return tokenizer, datamodule


# Fewer tokens than this is no real tokenizer: transformers builds one of 5 special tokens (every
# word [UNK], or nothing) from a folder that holds a model's config.json and no tokenizer files.
MIN_VOCAB = 100


def check_tokenizer(tokenizer, tok_path: str) -> None:
    """A ``UserError`` for a tokenizer with almost no vocabulary (see ``MIN_VOCAB``)."""
    if len(tokenizer) < MIN_VOCAB:
        raise UserError(
            f"the tokenizer loaded from {tok_path!r} has {len(tokenizer)} tokens: the folder holds "
            "no tokenizer files (tokenizer.json, vocab.txt, ...); copy the model's tokenizer "
            "into it, or point model.tokenizer at one"
        )


def build(cfg: DictConfig) -> tuple:
    """(tokenizer, datamodule with encoded splits, module) as configured; nothing trained."""
    from framework.module import assemble
    from framework.pretrained import build_encoder

    tokenizer, datamodule = build_data(cfg)
    task, init_from = datamodule.task, cfg.model.get("init_from")
    tok_path = tokenizer.name_or_path
    datamodule.setup_data()
    m = cfg.model
    encoder, extra = build_encoder(
        m.name_or_path,
        m.preset,
        m.attn_impl,
        len(tokenizer),
        m.attention_dropout,
        m.get("hidden_dropout"),
        init_from,
        from_scratch=bool(m.get("from_scratch", False)),
    )
    encoder.unpad = bool(m.get("unpad", False))
    if len(tokenizer) > encoder.cfg.vocab_size:  # its ids would index past the embeddings
        raise UserError(
            f"the tokenizer ({tok_path}) has {len(tokenizer)} tokens but the model's embeddings "
            f"have {encoder.cfg.vocab_size} rows; use the model's own tokenizer "
            "(model.tokenizer=null) or a model whose vocabulary holds it"
        )
    positions = encoder.cfg.max_position_embeddings - encoder.cfg.position_offset
    if datamodule.max_length > positions:
        raise UserError(
            f"data.max_length={datamodule.max_length} exceeds the model's {positions} "
            "positions; lower data.max_length"
        )
    module = assemble(encoder, task, extra, **cfg.optim)
    return tokenizer, datamodule, module
