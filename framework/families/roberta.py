"""RoBERTa and XLM-RoBERTa (multilingual-e5, bge-m3): BERT's names under ``roberta.``, and
positions counted from the padding index + 1 (``position_offset``)."""

from __future__ import annotations

from framework.families import Family, register_family
from framework.families.bert import bert_fields


def roberta_fields(hf: dict) -> dict:
    fields = bert_fields(hf)
    return {**fields, "position_offset": fields["pad_token_id"] + 1}


ROBERTA_MLM_HEAD = ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias", "lm_head.decoder.weight")

register_family(Family("roberta", "roberta", roberta_fields, mlm_head=ROBERTA_MLM_HEAD))
# XLM-RoBERTa's modules are RoBERTa's (transformers copies them); only the vocabulary differs
register_family(Family("xlm-roberta", "roberta", roberta_fields, mlm_head=ROBERTA_MLM_HEAD))
