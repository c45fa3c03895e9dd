"""The task contract, run on every registered task with no per-task test code.

Each task gets: a finite loss and gradients, overfitting one small batch, save -> load -> the same
predictions, and a Hugging Face export that transformers loads and that gives the same logits
(a task without an ``AutoModelFor...`` class: the encoder's output, from ``AutoModel``). A task
that declares no ``synthetic_rows`` is skipped. A task of your own:
``pytest tests/tasks/test_contract.py tests/test_predict.py --task my_pkg.tasks:MyTask``.
"""

from __future__ import annotations

import pytest
import torch
import transformers

import tasks  # noqa: F401  (registers the shipped tasks)
from framework.encoder import Encoder
from framework.export import export_hf
from framework.families import get_family
from framework.module import assemble
from framework.presets import preset
from framework.registry import get_task
from framework.task import Task

# One encoder per family layout: BERT's, ModernBERT's (pre-norm, GeGLU, rotary, a 4-token
# window on 2 of its 3 layers; its prediction head), GTE's (post-norm, rotary, GeGLU) and
# NomicBERT's (SwiGLU, no linear biases); the last three export in their own layouts.
ENCODERS = ["tiny", "modern_tiny", "gte_tiny", "nomic_tiny"]


@pytest.fixture(params=ENCODERS, scope="module")
def encoder_preset(request) -> str:
    return request.param


def _build(name: str, tokenizer, seed: int = 0, n: int = 8, encoder: str = "tiny"):
    task = get_task(name)()
    try:
        rows = task.synthetic_rows(n, seed=0)
    except NotImplementedError:
        pytest.skip(f"task {name!r} declares no synthetic_rows")
    task.setup([rows])
    for split in ("val", "predict"):  # as the data module does for every split but train
        task.keep_rows(split, rows)
    cols = task.encode(rows, list(range(n)), tokenizer, max_length=32)
    features = [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]
    batch = task.collate(features, pad_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    encoder = Encoder(
        preset(encoder, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    )
    return assemble(encoder, task), batch


def test_loss_is_finite_and_gradients_flow(task_name, encoder_preset, tokenizer):
    module, batch = _build(task_name, tokenizer, encoder=encoder_preset)
    out = module(batch)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    # every parameter is used (DDP runs with find_unused_parameters=False)
    assert missing == []


def test_overfits_one_small_batch(task_name, encoder_preset, tokenizer):
    module, batch = _build(task_name, tokenizer, encoder=encoder_preset)
    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=2e-3)
    first = None
    for _ in range(60):
        loss = module(batch).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    with torch.no_grad():
        final = module(batch).loss.item()
    # Below 0.3 x the start: a classifier goes from ln(2) to ~0, a masked LM from ln(30522) to
    # about 2 (it learns its synthetic document's words, then their positions).
    assert final < 0.3 * first, (first, final)


def test_save_load_same_predictions(task_name, encoder_preset, tokenizer, tmp_path):
    module, batch = _build(task_name, tokenizer, seed=0, encoder=encoder_preset)
    module.eval()
    torch.save(module.state_dict(), tmp_path / "m.pt")
    other, _ = _build(task_name, tokenizer, seed=1, encoder=encoder_preset)
    other.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    other.eval()
    with torch.no_grad():
        a, b = module(batch), other(batch)
    assert torch.allclose(a.logits, b.logits)
    pa, pb = module.task.prediction(a, batch), other.task.prediction(b, batch)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def test_decode_gives_one_json_record_per_row(task_name, encoder_preset, tokenizer):
    import json

    module, batch = _build(task_name, tokenizer, encoder=encoder_preset)
    module.eval()
    with torch.no_grad():
        decoded = module.decode_predictions([module.predict_step(batch, 0)])
    assert sorted(decoded) == sorted(set(batch["row"].tolist()))
    json.dumps(decoded)  # records are JSON-ready


def test_is_a_task_with_declared_hooks_only(task_name):
    cls = get_task(task_name)
    assert issubclass(cls, Task) and not cls.__abstractmethods__
    declared = {n for n in dir(Task) if not n.startswith("_")}
    # a public method the framework does not know of would be a hidden hook
    extra = {
        n
        for n, v in vars(cls).items()
        if callable(v) and not n.startswith("_") and n not in declared
    }
    assert all(not n.startswith(("on_", "hf_", "prepare", "tie")) for n in extra), extra


def test_hf_export_loads_in_transformers_with_same_logits(
    task_name, encoder_preset, tokenizer, tmp_path
):
    module, batch = _build(task_name, tokenizer, encoder=encoder_preset)
    module.eval()
    head_class = type(module.task).hf_export is not Task.hf_export  # an AutoModelFor... class
    family = get_family(module.encoder.cfg.family)
    if head_class and family.hf_config is not None:  # a family with a layout of its own
        exported = module.task.hf_export({}, {}, module.head)
        head_class = exported is not None and exported[0]["architectures"][0] in family.classes
    if head_class:
        out_dir = export_hf(module, tokenizer, tmp_path / "export")
    else:  # the encoder alone, said in a warning
        with pytest.warns(UserWarning, match="declares no transformers|has no counterpart"):
            out_dir = export_hf(module, tokenizer, tmp_path / "export")
    config = transformers.AutoConfig.from_pretrained(out_dir)
    hf_cls = getattr(transformers, config.architectures[0])
    hf = hf_cls.from_pretrained(out_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        prepared = module.prepare(batch)  # what the encoder sees (e.g. masked tokens)
        if head_class:
            output = hf(**module.task.hf_inputs(prepared))
            ours = module(batch).logits
            theirs = module.task.hf_outputs(output, prepared)
        else:  # the encoder alone, on (rows, T) inputs (a multiple-choice batch is 3-D)
            inputs = {k: v.flatten(0, -2) for k, v in module.task.hf_inputs(prepared).items()}
            if not getattr(hf.config, "type_vocab_size", 0):  # ModernBERT: no segments
                inputs.pop("token_type_ids", None)
            mask = inputs["attention_mask"].bool()
            ids, types = inputs["input_ids"], inputs.get("token_type_ids")
            ours = module.encoder(ids, inputs["attention_mask"], types)[mask]
            theirs = hf(**inputs).last_hidden_state[mask]
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert transformers.AutoTokenizer.from_pretrained(out_dir)("hi")["input_ids"][0] == 101
