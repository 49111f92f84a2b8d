"""Reference solutions of lesson 01, the forward pass and the loss."""

import torch.nn.functional as F


def shifted_loss(logits, ids):
    """Mean cross-entropy of predicting ids[:, t + 1] from the logits at position t (the shift
    done here, unlike tinyslm.train.next_token_loss, which takes targets already shifted).
    logits (B, T, V), ids (B, T) -> () over the B * (T - 1) predictions."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def causal_mask(q_pos, k_pos):
    """True where a query may attend a key: the key's position is not after the query's.
    q_pos (T,), k_pos (S,) -> (T, S) bool."""
    return k_pos[None, :] <= q_pos[:, None]
