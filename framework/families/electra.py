"""ELECTRA (the discriminator): BERT's names under ``electra.``; ELECTRA-small's embeddings are
smaller than the hidden size and projected up (``embedding_size``, ``embeddings_project``)."""

from __future__ import annotations

from framework.families import Family, register_family
from framework.families.bert import bert_fields


def electra_fields(hf: dict) -> dict:
    size = hf.get("embedding_size")
    return {**bert_fields(hf), "embedding_size": None if size == hf["hidden_size"] else size}


register_family(Family("electra", "electra", electra_fields))
