"""llama.cpp tensor names <-> HF tensor names, and the one layout change llama.cpp makes on the way.

    HF (config.json folder)                     GGUF (llama.cpp)
    model.embed_tokens.weight                   token_embd.weight
    model.layers.3.self_attn.q_proj.weight      blk.3.attn_q.weight
    model.layers.3.mlp.down_proj.weight         blk.3.ffn_down.weight
    model.norm.weight / lm_head.weight          output_norm.weight / output.weight

The table is gguf-py's own (`gguf.get_tensor_name_map`, the one llama.cpp's convert_hf_to_gguf.py
writes with and transformers' GGUF loader reads with). It maps HF names to GGUF names; tinyslm
then goes from HF names to its parameters through the family's key map (families/keymap.py), so a
GGUF and a config.json folder share one mechanism.

llama.cpp's Llama graph applies RoPE to adjacent pairs (x0, x1), (x2, x3), ... while the HF
checkpoint's rotate_half pairs x_i with x_{i + hd/2}. convert_hf_to_gguf.py therefore reorders the
rows of q_proj and k_proj (weights and biases) within each head:

    HF rows of one head:   [r0 r1 ... r(hd/2-1) | r(hd/2) ... r(hd-1)]
    GGUF rows:             [r0 r(hd/2) r1 r(hd/2+1) ...]           (permute)

`unpermute` undoes it. It moves whole rows, so it applies unchanged to a quantized tensor's rows
of blocks (a Q4_0 row is its own blocks; no block straddles two rows).

Older converters wrote phi-2's attention as one `blk.N.attn_qkv` tensor (rows [q | k | v], from the
original checkpoint's fused Wqkv), where the current one writes attn_q, attn_k and attn_v apart;
llama.cpp reads both. `split_fused_qkv` turns the first into the second, whole rows again.
"""

from __future__ import annotations

import functools

from ..errors import CheckpointError
from ..layers.rope import permute, unpermute  # noqa: F401  (the q/k row permutation: a RoPE fact; re-exported)
from .reader import GGUFFile, GGUFTensor, _gguf


def arch_enum(arch: str):
    """gguf-py's MODEL_ARCH member for a general.architecture name ("llama" -> MODEL_ARCH.LLAMA)."""
    return {name: key for key, name in _gguf().MODEL_ARCH_NAMES.items()}[arch]


@functools.cache
def _name_map(arch: str, n_layers: int):
    return _gguf().get_tensor_name_map(arch_enum(arch), n_layers)


def gguf_name(arch: str, n_layers: int, hf_key: str) -> str:
    """The GGUF name of an HF tensor name (`model.layers.0.self_attn.q_proj.weight` -> `blk.0.attn_q.weight`)."""
    module, _, leaf = hf_key.rpartition(".")
    names = _name_map(arch, n_layers)
    name = names.get_name(module)
    if name is None and module.startswith("transformer."):  # gguf-py lists some (Bloom) without the prefix
        name = names.get_name(module.removeprefix("transformer."))
    if name is None:
        raise CheckpointError(f"no GGUF name for tensor {hf_key!r} of a {arch} model (gguf-py's tensor name map)")
    return f"{name}.{leaf}"


def qk_heads(hf_key: str, n_heads: int, n_kv_heads: int) -> int | None:
    """How many heads a permuted tensor holds: query heads for q_proj, KV heads for k_proj; None otherwise."""
    if ".self_attn.q_proj." in hf_key:
        return n_heads
    if ".self_attn.k_proj." in hf_key:
        return n_kv_heads
    return None


def _rows(tensor: GGUFTensor, name: str, start: int, stop: int) -> GGUFTensor:
    """Rows start..stop of a tensor (of a 1-D one: values), as a view of the file's pages."""
    data = tensor.data
    if len(tensor.shape) == 1 and data.shape[0] != tensor.shape[0]:  # 1-D raw bytes: bytes per value
        per = data.shape[0] // tensor.shape[0]
        return GGUFTensor(name, tensor.kind, (stop - start,), data[start * per : stop * per])
    return GGUFTensor(name, tensor.kind, (stop - start, *tensor.shape[1:]), data[start:stop])


def split_fused_qkv(file: GGUFFile, expected: set[str], n_layers: int, q_rows: int, kv_rows: int) -> None:
    """Replace, in `file.tensors`, each `blk.N.attn_qkv.{weight,bias}` by attn_q / attn_k / attn_v views of its
    rows [q_rows | kv_rows | kv_rows], where the model expects those (`expected`: the GGUF names it loads)."""
    for i in range(n_layers):
        for leaf in ("weight", "bias"):
            fused = f"blk.{i}.attn_qkv.{leaf}"
            if fused not in file.tensors or f"blk.{i}.attn_q.{leaf}" not in expected:
                continue
            tensor = file.tensors.pop(fused)
            sizes = (q_rows, kv_rows, kv_rows)
            if tensor.shape[0] != sum(sizes):
                raise CheckpointError(f"{file.path}: tensor {fused!r} has {tensor.shape[0]} rows, expected q, k and v's "
                                      f"{q_rows} + {kv_rows} + {kv_rows} = {sum(sizes)}")  # fmt: skip
            start = 0
            for part, size in zip("qkv", sizes):
                name = f"blk.{i}.attn_{part}.{leaf}"
                file.tensors[name] = _rows(tensor, name, start, start + size)
                start += size
