"""Lesson 01, the forward pass and the loss: the checkers of its exercises.

    shifted_loss(logits, ids)     the mean next-token cross-entropy, shifting the targets itself (unlike
                                  tinyslm.train.next_token_loss, which takes targets already shifted)
    causal_mask(q_pos, k_pos)     which keys each query may attend: key position <= query position
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from ..layers.positions import attention_mask
from ..model import CausalLM
from ..train import loss_sum
from .check import Exercise


def _ids(shape: tuple[int, int], vocab: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def check_shifted_loss(shifted_loss) -> bool:
    """Your loss against torch's cross-entropy on shifted targets, transformers' ForCausalLMLoss (which shifts the
    labels itself) and tinyslm's trainer (`tinyslm.train.loss_sum`, divided by the number of targets)."""
    from transformers.loss.loss_utils import ForCausalLMLoss  # noqa: PLC0415  (optional dependency)

    with Exercise("shifted_loss", against="torch's cross-entropy, transformers' ForCausalLMLoss and tinyslm's "
                  "trainer") as ex:  # fmt: skip
        for k, (b, t, v) in enumerate([(2, 7, 11), (1, 2, 5), (3, 16, 64)]):
            gen = torch.Generator().manual_seed(100 + k)
            logits = 3 * torch.randn(b, t, v, generator=gen)  # (B, T, V)
            ids = _ids((b, t), v, seed=200 + k)  # (B, T)
            want = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
            case = f"shifted_loss(logits {tuple(logits.shape)}, ids {tuple(ids.shape)})"
            got = shifted_loss(logits, ids)
            ex.compare(case, got, want, atol=1e-5)
            ex.compare(f"{case} vs transformers' ForCausalLMLoss", got, ForCausalLMLoss(logits, ids, v), atol=1e-5)
        config = ModelConfig(name="check", vocab_size=97, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=32)
        model = CausalLM(config).init_weights(seed=0)
        ids = _ids((2, 12), config.vocab_size, seed=7)
        with torch.no_grad():
            got = shifted_loss(model(ids), ids)
            want = loss_sum(model, ids[:, :-1], ids[:, 1:]) / ids[:, 1:].numel()  # what the trainer minimises
        ex.compare("shifted_loss(a tinyslm model's logits, ids (2, 12)) vs the trainer's loss", got, want, atol=1e-5)
    return ex.passed


def check_causal_mask(causal_mask) -> bool:
    """Your mask against tinyslm's attention_mask (no window) and transformers' causal_mask_function."""
    from transformers.masking_utils import causal_mask_function  # noqa: PLC0415  (optional dependency)

    cases = [
        ("5 queries over their own 5 keys", torch.arange(5), torch.arange(5)),
        ("a single position", torch.arange(1), torch.arange(1)),
        ("3 new queries (positions 5..7) after 5 cached keys", torch.arange(5, 8), torch.arange(8)),
        ("one decoding step at position 9", torch.tensor([9]), torch.arange(10)),
    ]
    with Exercise("causal_mask", against="tinyslm's attention_mask and transformers' causal_mask_function") as ex:
        for case, q_pos, k_pos in cases:
            got = causal_mask(q_pos, k_pos)
            ex.compare(f"causal_mask: {case}", got, attention_mask(q_pos, k_pos, None))
            theirs = causal_mask_function(0, 0, q_pos[:, None], k_pos[None, :])  # (T, 1) vs (1, S) -> (T, S)
            ex.compare(f"causal_mask: {case}, vs transformers", got, theirs)
    return ex.passed
