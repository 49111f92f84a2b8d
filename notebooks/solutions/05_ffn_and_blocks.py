"""Reference solutions of lesson 05 (FFNs and blocks)."""

import torch.nn.functional as F


def swiglu(x, w_gate, w_up, w_down):
    """x (..., D) -> (..., D): down(silu(gate(x)) * up(x)), each weight stored as nn.Linear stores it
    (out_features, in_features), so a projection is x @ w.T."""
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def ffn_parameters(kind, dim, hidden, bias):
    """Parameters of a "gated" FFN (three matrices: 3·D·F, biases 2F + D) or a "plain" one (two matrices:
    2·D·F, biases F + D)."""
    if kind == "gated":
        return 3 * dim * hidden + (2 * hidden + dim if bias else 0)
    return 2 * dim * hidden + (hidden + dim if bias else 0)
