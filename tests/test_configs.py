"""Every shipped config composes, and its objects instantiate (the lightning-hydra-template way)."""

from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from framework.data import DataModule
from framework.errors import UserError
from framework.overrides import check_overrides, group_options
from framework.pretrained import build_encoder
from framework.registry import build_task, get_task, list_tasks
from tests.conftest import compose


def _instantiate(cfg, tmp_path, tokenizer):
    """Build everything ``framework.train.run`` builds, without training."""
    task = build_task(cfg.task)
    dm = DataModule(task, tokenizer, **OmegaConf.to_container(cfg.data, resolve=True))
    callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values() if c is not None]
    loggers = [hydra.utils.instantiate(c) for c in cfg.logger.values() if c is not None]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    return task, dm, trainer


def _cpu(cfg_overrides: list[str]) -> list[str]:
    # GPU trainer configs are composed as shipped, and instantiated on the CPU when no GPU exists.
    if not torch.cuda.is_available():
        return [*cfg_overrides, "trainer.accelerator=cpu", "trainer.precision=32-true"]
    return cfg_overrides


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_experiments_compose_and_instantiate(experiment, tmp_path, tokenizer):
    cfg = compose(f"experiment={experiment}", f"paths.output_dir={tmp_path}")
    if cfg.data.path is None and cfg.data.hub_id is None:  # a local-files recipe: data.path=DIR
        cfg = compose(f"experiment={experiment}", f"paths.output_dir={tmp_path}",
                      f"data.path={tmp_path}")  # fmt: skip
    _task, _dm, trainer = _instantiate(cfg, tmp_path, tokenizer)
    assert cfg.task.monitor.startswith("val/")
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("trainer", group_options("trainer"))
def test_trainers_instantiate(trainer, tmp_path, tokenizer):
    cfg = compose(*_cpu([f"trainer={trainer}", f"paths.output_dir={tmp_path}"]))
    if trainer == "fsdp" and not torch.cuda.is_available():  # Lightning's FSDP needs a GPU
        from lightning.pytorch.strategies import FSDPStrategy

        from framework.encoder import Layer

        strategy = hydra.utils.instantiate(cfg.trainer.strategy)
        assert isinstance(strategy, FSDPStrategy)
        assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Layer}
        return
    _, _, t = _instantiate(cfg, tmp_path, tokenizer)
    if trainer == "ddp_sim":
        assert t.num_devices == 2 and t.strategy.process_group_backend == "gloo"


@pytest.mark.parametrize("logger", group_options("logger"))
def test_loggers_instantiate(logger, tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose(f"logger={logger}", f"paths.output_dir={tmp_path}")
    _, _, t = _instantiate(cfg, tmp_path, tokenizer)
    assert len(t.loggers) == len(cfg.logger) >= 1


@pytest.mark.parametrize("group", ["callbacks", "debug", "data", "task", "optim", "paths", "hydra"])
def test_other_groups_compose(group, tmp_path, tokenizer):
    for option in group_options(group):
        overrides = [f"{group}={option}", f"paths.output_dir={tmp_path}"]
        if group == "paths":
            overrides.pop()
        cfg = compose(*overrides)
        if group == "data" and cfg.data.path is None and cfg.data.hub_id is None:
            overrides.append(f"data.path={tmp_path}")  # local files only: data.path
            owner = [n for n in list_tasks() if get_task(n).file_format == cfg.data.format]
            cfg = compose(*overrides, *[f"task={t}" for t in owner[:1]])  # e.g. squad: qa
        if group not in ("hydra", "paths"):
            _instantiate(cfg, tmp_path, tokenizer)


@pytest.mark.parametrize("model", group_options("model"))
def test_models_build_or_fail_clearly_offline(model):
    cfg = compose(f"model={model}")
    m = cfg.model
    try:
        encoder, _ = build_encoder(m.name_or_path, m.preset, m.attn_impl, 30522)
    except UserError as e:  # a hub id with no network: one clear line
        assert "offline" in str(e) and "\n" not in str(e)
        return
    assert encoder.cfg.hidden_size in (64, 256, 384, 768)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["task=clasification"], "unknown task 'clasification'; choose one of: classification"),
        (["model=minilmm"], "Did you mean 'minilm'?"),
        (["data=sst3"], "choose one of: commonsenseqa, conll2003, goemotions"),
        (["trainer=ddp_simm"], "ddp_sim"),
        (["-m", "optim.lr=1e-4,2e-4", "data.pth=x"], "unknown config key 'data.pth'"),
        (["experiment=sst2", "task.text_colum=x"], "Did you mean 'text_column'?"),
        (["seeed=1"], "unknown config key 'seeed'"),
        (["logger=[csv,tensorbord]"], "Did you mean 'tensorboard'?"),
        (["trainer.detect_anomali=true"], "Did you mean 'detect_anomaly'?"),
    ],
)
def test_bad_overrides_fail_in_one_line(argv, expected):
    with pytest.raises(UserError) as e:
        check_overrides(argv)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_good_overrides_pass():
    check_overrides(["experiment=sst2", "-m", "optim.lr=1e-4,2e-4", "+foo=1", "hydra.run.dir=x"])
    check_overrides(["data.path=../shared/data/sst2", "task.labels=[a,b]", "trainer.max_epochs=2"])
    check_overrides(["logger=[csv,tensorboard]", "-m", "task=classification,ner"])
    # a key whose value interpolates Hydra's runtime (${paths.output_dir}) exists all the same
    check_overrides(["callbacks.model_checkpoint.dirpath=/elsewhere/ckpts"])


def test_any_trainer_argument_without_plus(tmp_path):
    from framework.overrides import expand_trainer_overrides

    args = ["trainer.detect_anomaly=true", "trainer.max_epochs=2", "data.batch_size=8"]
    check_overrides(args)  # detect_anomaly is not in conf/trainer: a Trainer argument
    expanded = expand_trainer_overrides(args)
    assert expanded == ["++trainer.detect_anomaly=true", "++trainer.max_epochs=2",
                        "data.batch_size=8"]  # fmt: skip
    cfg = compose(*expanded, f"paths.output_dir={tmp_path}", "trainer.accelerator=cpu")
    trainer = hydra.utils.instantiate(cfg.trainer)
    assert trainer.max_epochs == 2 and cfg.trainer.detect_anomaly is True


def test_wandb_goes_offline_without_an_api_key(tmp_path, monkeypatch):
    from framework.loggers import _wandb_offline_without_key

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    _wandb_offline_without_key()
    assert __import__("os").environ["WANDB_MODE"] == "offline"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    _wandb_offline_without_key()
    assert "WANDB_MODE" not in __import__("os").environ


def test_max_length_beyond_the_models_positions_is_refused(tmp_path):
    from framework.build import build

    cfg = compose("model=tiny", "data.max_length=600", f"paths.output_dir={tmp_path}")
    with pytest.raises(UserError, match="exceeds the model's 512 positions"):
        build(cfg)


@pytest.mark.parametrize("group", ["model", "data"])
def test_each_key_is_documented_once_in_the_groups_base(group):
    # Options compose from _base.yaml (Hydra defaults): they set values, the base documents them.
    from omegaconf import OmegaConf as OC

    from tests.conftest import ROOT

    base = OC.load(ROOT / "conf" / group / "_base.yaml")
    for name in group_options(group):
        path = ROOT / "conf" / group / f"{name}.yaml"
        text = path.read_text()
        body = text.split("  - _self_\n", 1)[1]
        assert "#" not in body, f"{path.name}: key comments belong in _base.yaml"
        own = set(OC.load(path)) - {"defaults"}
        assert own <= set(base), f"{path.name} adds keys the base lacks: {own - set(base)}"
    assert "_base" not in group_options(group)  # not a choice on the command line


def _readme_train_commands() -> list[list[str]]:
    """The arguments of every ``python -m framework.train`` line in README.md's bash blocks, as
    ``.ci/readme_commands.py`` (which runs them all) reads them."""
    import importlib.util
    import shlex

    from tests.conftest import ROOT

    path = ROOT / ".ci" / "readme_commands.py"
    spec = importlib.util.spec_from_file_location("readme_commands", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    prefix = "python -m framework.train"
    return [shlex.split(line)[3:] for line in module.readme_commands() if line.startswith(prefix)]


@pytest.mark.parametrize("args", _readme_train_commands(), ids=" ".join)
def test_every_readme_train_command_composes(args, tmp_path):
    """The docs match the code: each README command passes the override checks and composes
    (a multirun's first combination; ``--cfg job`` prints what this composes)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from framework.overrides import expand_trainer_overrides

    args = [a for a in args if a not in ("-m", "--cfg", "job")]
    check_overrides(args)
    args = [a.split(",")[0] if "=" in a and "[" not in a else a for a in args]  # first of a sweep
    cfg = compose(*expand_trainer_overrides(args), f"paths.output_dir={tmp_path}")
    for o in OverridesParser.create().parse_overrides(args):  # each landed where the README says
        if "." in o.key_or_group and not o.key_or_group.startswith("hydra"):
            assert OmegaConf.select(cfg, o.key_or_group) == o.value(), o.input_line
