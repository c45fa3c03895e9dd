"""The masked-LM head (``tasks/mlm.py``): BERT's prediction head, its decoder tied to the word
embeddings, and where the pretrained checkpoints of each family keep theirs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from framework.errors import UserError


class MLMHead(nn.Module):
    """BERT's prediction head; the decoder weight is the encoder's word embedding matrix."""

    def __init__(self, hidden_size: int, vocab_size: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)
        self._embedding: list[nn.Embedding] = []  # not a submodule: the encoder owns it

    def tie_to(self, encoder: nn.Module) -> None:
        words = encoder.embeddings.word_embeddings
        if words.embedding_dim != self.dense.out_features:
            raise UserError(
                f"the MLM head ties to the word embeddings, whose size ({words.embedding_dim}) "
                f"differs from the hidden size ({self.dense.out_features}); factorised "
                "embeddings (ELECTRA-small) are not supported for task=mlm"
            )
        self._embedding[:] = [words]

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (M, H) -> (M, V)
        if not self._embedding:
            raise RuntimeError("MLMHead.tie_to(encoder) was not called")
        h = self.norm(F.gelu(self.dense(h)))
        return F.linear(h, self._embedding[0].weight, self.bias)


# The MLM heads of BertForMaskedLM, RobertaForMaskedLM and DistilBertForMaskedLM: (dense,
# LayerNorm, output bias); the decoder is the tied word embedding matrix in each.
_PRETRAINED_HEADS = (
    ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
     "cls.predictions.bias"),
    ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
    ("vocab_transform", "vocab_layer_norm", "vocab_projector.bias"),
)  # fmt: skip
