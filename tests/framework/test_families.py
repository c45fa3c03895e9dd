"""Every registered encoder family against transformers: the same outputs on every path of the
fused encoder (padded, unpadded in length buckets, selected rows, the math reference, varlen with
a reference kernel), sliding windows included; the continued-pretraining head; exports."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from framework.convert import config_to_hf, tasklight_to_hf
from framework.errors import UserError
from framework.export import export_hf
from framework.pretrained import load_pretrained
from tests.conftest import reference_varlen

VOCAB = 120
SMALL = {"attn_implementation": "eager"}
FAMILIES = {
    # config class, base model class, a class whose keys carry the family prefix, config kwargs
    "roberta": (tf.RobertaConfig, tf.RobertaModel, tf.RobertaForSequenceClassification,
                dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=40, type_vocab_size=1,
                     pad_token_id=1)),
    "distilbert": (tf.DistilBertConfig, tf.DistilBertModel, tf.DistilBertForSequenceClassification,
                   dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                        max_position_embeddings=40)),
    "electra": (tf.ElectraConfig, tf.ElectraModel, tf.ElectraForPreTraining,
                dict(vocab_size=VOCAB, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=40)),
    "xlm-roberta": (tf.XLMRobertaConfig, tf.XLMRobertaModel,
                    tf.XLMRobertaForSequenceClassification,
                    dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=40,
                         type_vocab_size=1, pad_token_id=1)),
    "bert": (tf.BertConfig, tf.BertModel, tf.BertForSequenceClassification,
             dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=40)),
    # a window of 4 tokens each side (local_attention 8): the test rows are longer
    "modernbert": (tf.ModernBertConfig, tf.ModernBertModel, tf.ModernBertForSequenceClassification,
                   dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4,
                        num_attention_heads=4, intermediate_size=48, max_position_embeddings=64,
                        local_attention=8, global_attn_every_n_layers=2, pad_token_id=0,
                        bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3)),
    "gte": (tf.GteConfig, tf.GteModel, tf.GteForSequenceClassification,
            dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=64, type_vocab_size=1,
                 pad_token_id=1)),
    "nomic_bert": (tf.NomicBertConfig, tf.NomicBertModel, tf.NomicBertForSequenceClassification,
                   dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)),
    # ELECTRA-small's shape: embeddings smaller than the hidden size, then a projection
    "electra_small": (tf.ElectraConfig, tf.ElectraModel, tf.ElectraForPreTraining,
                      dict(vocab_size=VOCAB, embedding_size=16, hidden_size=32,
                           num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           max_position_embeddings=40)),
}  # fmt: skip
FAMILY_TYPES = {config_cls.model_type for config_cls, *_ in FAMILIES.values()}


def _checkpoint(tmp_path, name: str, prefixed: bool):
    """A random model of the family saved as a checkpoint directory, and its base model."""
    config_cls, base_cls, prefixed_cls, kwargs = FAMILIES[name]
    torch.manual_seed(0)
    config = config_cls(**kwargs, **SMALL)
    model = (prefixed_cls if prefixed else base_cls)(config).eval()
    with torch.no_grad():  # no unit LayerNorms or zero biases: a swapped tensor would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(tmp_path / name)
    base = model if not prefixed else getattr(model, base_cls.base_model_prefix)
    return tmp_path / name, base, config


def _batch(pad_id: int):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    return ids.masked_fill(mask == 0, pad_id), mask


@pytest.mark.parametrize("prefixed", [False, True], ids=["base", "for_task"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_matches_transformers(tmp_path, name, prefixed):
    path, theirs, config = _checkpoint(tmp_path, name, prefixed)
    ours, rest = load_pretrained(str(path))
    ours.eval()
    ids, mask = _batch(config.pad_token_id)
    with torch.no_grad():
        a = ours(ids, mask)
        b = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert a.shape == b.shape
    assert (a[real] - b[real]).abs().max().item() <= 1e-5
    # A task head's tensors are handed over, never taken for the encoder's.
    assert all(not k.startswith(("embeddings.", "encoder.", "transformer.")) for k in rest)
    if prefixed:
        assert rest, "the task head's tensors should be in the rest"
    if name in ("roberta", "xlm-roberta"):  # left padding: positions count the real tokens only
        left_ids, left_mask = ids.flip(1), mask.flip(1)
        with torch.no_grad():
            a = ours(left_ids, left_mask)
            b = theirs(input_ids=left_ids, attention_mask=left_mask).last_hidden_state
        assert (a[left_mask.bool()] - b[left_mask.bool()]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", ["bert", "roberta", "xlm-roberta", "distilbert", "electra"])
def test_family_exports_as_bert_with_the_same_outputs(tmp_path, name):
    path, theirs, config = _checkpoint(tmp_path, name, prefixed=False)
    ours, _ = load_pretrained(str(path))
    bert = tf.BertModel(tf.BertConfig(**config_to_hf(ours.cfg), **SMALL), add_pooling_layer=False)
    state = tasklight_to_hf(ours.state_dict(), ours.cfg, position_offset=ours.cfg.position_offset)
    bert.load_state_dict(state, strict=False)  # no position_ids buffer in our state
    ids, mask = _batch(config.pad_token_id)
    with torch.no_grad():
        a = bert.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
        b = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert (a[real] - b[real]).abs().max().item() <= 1e-5


def test_factorised_embeddings_are_not_exported(tmp_path, tokenizer):
    from framework.module import assemble
    from tasks.classification import Classification

    path, _, _ = _checkpoint(tmp_path, "electra_small", prefixed=False)
    encoder, _ = load_pretrained(str(path))
    with pytest.raises(ValueError, match="factorised embeddings"):
        config_to_hf(encoder.cfg)
    task = Classification(labels=["a", "b"])
    module = assemble(encoder, task)
    with pytest.raises(UserError, match="no Hugging Face export"):
        export_hf(module, tokenizer, tmp_path / "export")
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize(
    "family, mlm_cls",
    [
        ("roberta", tf.RobertaForMaskedLM),
        ("xlm-roberta", tf.XLMRobertaForMaskedLM),
        ("distilbert", tf.DistilBertForMaskedLM),
        ("modernbert", tf.ModernBertForMaskedLM),
        ("gte", tf.GteForMaskedLM),
        ("nomic_bert", tf.NomicBertForMaskedLM),
    ],
)
def test_continued_pretraining_keeps_the_checkpoints_mlm_head(tmp_path, family, mlm_cls):
    from framework.module import assemble
    from tasks.mlm import MaskedLM

    config_cls, _, _, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    theirs = mlm_cls(config_cls(**kwargs, **SMALL)).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    theirs.save_pretrained(tmp_path / family)
    encoder, rest = load_pretrained(str(tmp_path / family))
    task = MaskedLM()
    task.vocab_size = VOCAB
    module = assemble(encoder, task, rest).eval()
    ids, mask = _batch(theirs.config.pad_token_id)
    labels = torch.full_like(ids, -100)
    labels[0, [2, 5]] = ids[0, [2, 5]]
    labels[1, 3] = ids[1, 3]
    with torch.no_grad():
        ours = module({"input_ids": ids, "attention_mask": mask, "labels": labels}).logits
        ref = theirs(input_ids=ids, attention_mask=mask).logits[labels != -100]
    assert ours.shape == (3, VOCAB)
    assert (ours - ref).abs().max().item() <= 1e-4


def test_every_registered_family_is_tested_here():
    from framework.families import load_families

    tested = {config_cls.model_type for config_cls, *_ in FAMILIES.values()}
    assert set(load_families()) == tested


@pytest.mark.parametrize("model_type, hint", [("deberta-v2", None), ("roberte", "'roberta'")])
def test_another_model_type_is_one_line_naming_the_families(tmp_path, model_type, hint):
    """A suggestion only for a name alike enough: none for DeBERTa (not 'modernbert')."""
    (tmp_path / "config.json").write_text(f'{{"model_type": "{model_type}"}}')
    with pytest.raises(UserError) as e:
        load_pretrained(str(tmp_path))
    message = str(e.value)
    assert f"is a '{model_type}' model" in message and "\n" not in message
    assert message.endswith(", ".join(sorted(FAMILY_TYPES)))
    if hint is None:
        assert "did you mean" not in message
    else:
        assert f"did you mean {hint}?" in message


def _mixed_batch(pad_id: int, left: bool = False):
    """16 rows of 1 to 24 tokens (longer than the 4-token window): bucketed on the unpadded
    path; right padding, or left with ``left``."""
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([24, 3, 17, 1, 9, 22, 5, 12, 2, 20, 7, 15, 4, 24, 6, 11])
    ids = torch.randint(5, VOCAB, (16, 24), generator=g)
    mask = (torch.arange(24)[None] < lengths[:, None]).long()
    if left:
        mask = mask.flip(1)
    return ids.masked_fill(mask == 0, pad_id), mask


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_path_matches_transformers(tmp_path, name, monkeypatch):
    """Padded (sdpa and math), unpadded in length buckets, selected rows (padded and unpadded),
    and the varlen plumbing with a reference kernel: all within 1e-5 of transformers."""
    import framework.attention as attention
    from framework.attention import length_buckets
    from framework.encoder import Encoder

    path, theirs, config = _checkpoint(tmp_path, name, prefixed=False)
    ours, _ = load_pretrained(str(path))
    ours.eval()
    ids, mask = _mixed_batch(config.pad_token_id)
    assert len(length_buckets(mask.sum(1).tolist())) > 1  # the unpadded path buckets this batch
    with torch.no_grad():
        ref = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    selected = real & (torch.rand(mask.shape, generator=torch.Generator().manual_seed(3)) < 0.3)
    selected[:, 0] = True

    def check(impl: str, unpad: bool) -> None:
        ours.attn_impl, ours.unpad = impl, unpad
        with torch.no_grad():
            out = ours(ids, mask)
            part = ours(ids, mask, output_mask=selected)
        assert (out[real] - ref[real]).abs().max().item() <= 1e-5, (impl, unpad)
        assert (part - ref[selected]).abs().max().item() <= 1e-5, (impl, unpad, "selected")

    for impl in ("sdpa", "math"):
        for unpad in (False, True):
            check(impl, unpad)
    monkeypatch.setattr(attention, "VARLEN", reference_varlen)
    monkeypatch.setattr(Encoder, "_use_varlen", lambda self, device, keep: True)
    check("sdpa", True)
    if name in ("roberta", "xlm-roberta", "modernbert"):  # left padding
        left_ids, left_mask = _mixed_batch(config.pad_token_id, left=True)
        ours.unpad = False
        with torch.no_grad():
            a = ours(left_ids, left_mask)
            b = theirs(input_ids=left_ids, attention_mask=left_mask).last_hidden_state
        assert (a[left_mask.bool()] - b[left_mask.bool()]).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "name, pooling",
    [("modernbert", "cls"), ("modernbert", "mean"), ("gte", "cls"), ("gte", "mean"),
     ("nomic_bert", "cls")],
)  # fmt: skip
def test_family_exports_in_its_own_layout(tmp_path, name, pooling, tokenizer):
    """The export is the family's own class and layout: its config reads back into the same
    EncoderConfig, and its ...ForSequenceClassification gives our logits (ModernBERT: its
    prediction head and [CLS] or mean pooling); a mean-pooled head where the family's class
    pools [CLS] only exports the base model (our hidden states), with a warning."""
    import warnings

    from framework.convert import config_from_hf
    from framework.families import get_family
    from framework.module import assemble
    from tasks.classification import Classification

    path, _, config = _checkpoint(tmp_path, name, prefixed=False)
    encoder, _ = load_pretrained(str(path))
    fam = get_family(name)
    assert config_from_hf(fam.hf_config(encoder.cfg)) == encoder.cfg
    task = Classification(labels=["a", "b", "c"], pooling=pooling)
    module = assemble(encoder, task).eval()
    with torch.no_grad():  # no zero biases or unit norms in the head: a swapped tensor shows
        for p in module.head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = export_hf(module, tokenizer, tmp_path / "export")
    arch = tf.AutoConfig.from_pretrained(out).architectures[0]
    theirs = getattr(tf, arch).from_pretrained(out, **SMALL).eval()
    ids, mask = _mixed_batch(config.pad_token_id)
    with torch.no_grad():
        if name == "gte" and pooling == "mean":
            assert arch == "GteModel" and any("AutoModelFor" in str(w.message) for w in caught)
            a, b = encoder(ids, mask), theirs(input_ids=ids, attention_mask=mask)
            assert (a[mask.bool()] - b.last_hidden_state[mask.bool()]).abs().max() <= 1e-4
        else:
            assert arch == fam.classes["BertForSequenceClassification"]
            batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.zeros(16).long()}
            a = module(batch).logits
            b = theirs(input_ids=ids, attention_mask=mask).logits
            assert a.shape == (16, 3) and (a - b).abs().max().item() <= 1e-4
