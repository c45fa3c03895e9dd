"""The masked-LM head (``tasks/mlm.py``): BERT's prediction head, its decoder tied to the word
embeddings (or its own matrix, ``task.tie_embeddings=false``), and where the pretrained
checkpoints of each family keep theirs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from framework.encoder import ACTIVATIONS
from framework.errors import UserError
from framework.families import load_families
from framework.heads import BERT_HEADS, HeadStyle


class MLMHead(nn.Module):
    """BERT's prediction head (dense, GELU, norm; ModernBERT's without biases: ``style``); the
    decoder weight is the encoder's word embedding matrix, or (``tied=False``) a matrix of its
    own."""

    def __init__(
        self, hidden_size: int, vocab_size: int, tied: bool = True, style: HeadStyle = BERT_HEADS
    ) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size, bias=style.dense_bias)
        self.norm = nn.LayerNorm(hidden_size, eps=style.norm_eps, bias=style.norm_bias)
        self.act = ACTIVATIONS[style.act]
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.dense.weight, std=0.02)
        if self.dense.bias is not None:
            nn.init.zeros_(self.dense.bias)
        self.decoder: nn.Parameter | None = None
        if not tied:
            self.decoder = nn.Parameter(torch.empty(vocab_size, hidden_size).normal_(std=0.02))
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

    @property
    def decoder_weight(self) -> torch.Tensor:  # (V, H)
        if self.decoder is not None:
            return self.decoder
        if not self._embedding:
            raise RuntimeError("MLMHead.tie_to(encoder) was not called")
        return self._embedding[0].weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (M, H) -> (M, V)
        h = self.norm(self.act(self.dense(h)))
        return F.linear(h, self.decoder_weight, self.bias)


# The MLM heads of each family's ...ForMaskedLM (framework.families): (dense, LayerNorm, output
# bias, decoder weight); the decoder is the tied word embedding matrix unless the checkpoint was
# exported untied.
_PRETRAINED_HEADS = tuple(
    dict.fromkeys(f.mlm_head for f in load_families().values() if f.mlm_head is not None)
)
