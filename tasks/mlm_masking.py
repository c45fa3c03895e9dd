"""Which positions the masked-LM task predicts (``tasks/mlm.py``): a share of the tokens, or of
whole words, never the special tokens."""

from __future__ import annotations

import torch


def choose_positions(
    ids: torch.Tensor,  # (B, T)
    attention_mask: torch.Tensor,  # (B, T)
    special: tuple[int | None, ...],  # ids never chosen ([CLS], [SEP], padding)
    probability: float,
    word_starts: torch.Tensor | None = None,  # (B, T), 1 where a word begins: whole words
    generator: torch.Generator | None = None,
) -> torch.Tensor:  # (B, T) bool
    """Positions to predict: ``probability`` of the tokens, or of the whole words."""
    maskable = attention_mask.bool()
    for token in special:
        maskable &= ids != token
    u = torch.rand(ids.shape, device=ids.device, generator=generator)
    if word_starts is not None:
        # A word's draw is the draw at its first token; its other tokens copy it.
        word = torch.cumsum(word_starts, dim=1) - 1  # (B, T) word index in the row
        u = torch.gather(u, 1, _first_token_of_word(word))
    chosen = (u < probability) & maskable
    # At least one position per batch, so that the loss is defined.
    if not chosen.any() and maskable.any():
        first = maskable.flatten().nonzero()[0]
        chosen.view(-1)[first] = True
    return chosen


def _first_token_of_word(word: torch.Tensor) -> torch.Tensor:
    """(B, T) index of the first token of each token's word (``word`` counts words per row)."""
    T = word.size(1)
    pos = torch.arange(T, device=word.device).expand_as(word)
    # The first position of word w is the smallest position whose word index is w.
    first = torch.full_like(word, T)
    first.scatter_reduce_(1, word.clamp(min=0), pos, reduce="amin")
    return torch.gather(first, 1, word.clamp(min=0))
