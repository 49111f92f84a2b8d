"""Lesson 05 (FFNs and blocks): the checkers of its exercises.

    check_swiglu(swiglu)                    a SwiGLU FFN from its three weight matrices
    check_ffn_parameters(ffn_parameters)    the closed-form parameter count of a gated or plain FFN
"""

from __future__ import annotations

import torch

from ..layers.ffn import GatedFFN, make_ffn
from .check import Exercise


def check_swiglu(swiglu) -> bool:
    """Your swiglu(x (..., D), w_gate (F, D), w_up (F, D), w_down (D, F)) -> (..., D) against tinyslm's GatedFFN
    and transformers' LlamaMLP holding the same weights."""
    from transformers import LlamaConfig  # noqa: PLC0415
    from transformers.models.llama.modeling_llama import LlamaMLP  # noqa: PLC0415

    with Exercise("swiglu", against="tinyslm's GatedFFN and transformers' LlamaMLP") as ex:
        gen = torch.Generator().manual_seed(5)
        for shape, hidden in [((2, 5, 16), 24), ((1, 1, 8), 8), ((3, 32), 40)]:
            dim = shape[-1]
            ffn = GatedFFN(dim, hidden, activation="silu")
            with torch.no_grad():
                for linear in (ffn.gate, ffn.up, ffn.down):
                    linear.weight.copy_(torch.randn(linear.weight.shape, generator=gen) * 0.5)
            x = torch.randn(shape, generator=gen) * 2  # (..., D): values where silu is far from linear
            case = f"swiglu(x of shape {shape}, {hidden} hidden units)"
            got = swiglu(x, ffn.gate.weight.detach(), ffn.up.weight.detach(), ffn.down.weight.detach())
            with torch.no_grad():
                ex.compare(case, got, ffn(x), atol=1e-5, rtol=1e-5)
                hf_config = LlamaConfig(hidden_size=dim, intermediate_size=hidden, num_attention_heads=1)
                mlp = LlamaMLP(hf_config)
                mlp.load_state_dict({"gate_proj.weight": ffn.gate.weight, "up_proj.weight": ffn.up.weight,
                                     "down_proj.weight": ffn.down.weight})  # fmt: skip
                ex.compare(f"{case} vs transformers' LlamaMLP", got, mlp(x), atol=1e-5, rtol=1e-5)
    return ex.passed


def check_ffn_parameters(ffn_parameters) -> bool:
    """Your ffn_parameters(kind, dim, hidden, bias) -> int against the parameters of tinyslm's FFN modules
    (make_ffn), for "gated" and "plain" FFNs with and without biases."""
    with Exercise("ffn_parameters", against="the parameter counts of tinyslm's GatedFFN and PlainFFN") as ex:
        for kind in ("gated", "plain"):
            for dim, hidden in [(64, 176), (576, 1536), (7, 3)]:
                for bias in (False, True):
                    with torch.device("meta"):  # shapes only, no memory
                        ffn = make_ffn(kind, dim, hidden, "silu", bias)
                    want = sum(p.numel() for p in ffn.parameters())
                    ex.compare(f"ffn_parameters({kind!r}, dim={dim}, hidden={hidden}, bias={bias})",
                               ffn_parameters(kind, dim, hidden, bias), want)  # fmt: skip
    return ex.passed
