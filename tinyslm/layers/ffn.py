"""Feed-forward networks: the gated FFN (SwiGLU / GeGLU) and the plain two-layer MLP.

A fused checkpoint tensor (Phi-3's gate_up_proj) is split at load time by the family's key map, so
the module stays the same three matrices.

Shapes: x (B, T, D) -> (B, T, D); the hidden width F (ffn_dim) may differ per layer.

    gated (Shazeer 2020, Llama):  down( act(gate(x)) * up(x) )     3 matrices, D->F, D->F, F->D
    plain (GPT-2, OPT, Pythia):   down( act(up(x)) )                 2 matrices, D->F, F->D
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

ACTIVATIONS = {
    "silu": F.silu,  # a.k.a. swish; SwiGLU when gated
    "gelu": F.gelu,  # exact (erf) GELU
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # torch's kernel: Gemma's gelu_pytorch_tanh
    # the same tanh approximation written out op by op, as GPT-2 / Phi define gelu_new: equal in float32,
    # but each op rounds in bfloat16, so bf16 parity with those checkpoints needs this spelling
    "gelu_new": lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0)))),
    "relu": F.relu,
    "relu2": lambda x: F.relu(x).square(),  # squared ReLU (So et al. 2021, Primer), Nemotron's relu2
}


class GatedFFN(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str = "silu", bias: bool = False):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=bias)  # D -> F
        self.up = nn.Linear(dim, hidden, bias=bias)  # D -> F
        self.down = nn.Linear(hidden, dim, bias=bias)  # F -> D
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        return self.down(self.act(self.gate(x)) * self.up(x))  # (B, T, F) -> (B, T, D)


class PlainFFN(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str = "gelu", bias: bool = True):
        super().__init__()
        self.up = nn.Linear(dim, hidden, bias=bias)  # D -> F
        self.down = nn.Linear(hidden, dim, bias=bias)  # F -> D
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        return self.down(self.act(self.up(x)))


def make_ffn(kind: str, dim: int, hidden: int, activation: str, bias: bool) -> nn.Module:
    kinds = {"gated": GatedFFN, "plain": PlainFFN}
    if kind not in kinds or activation not in ACTIVATIONS:
        raise ConfigError(f"unknown FFN {kind!r} / activation {activation!r}; FFNs: {', '.join(kinds)}; "
                          f"activations: {', '.join(ACTIVATIONS)}")  # fmt: skip
    return kinds[kind](dim, hidden, activation=activation, bias=bias)
