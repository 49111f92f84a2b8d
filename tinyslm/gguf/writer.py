"""Writing a CausalLM as a GGUF file that llama.cpp and transformers read.

The path is the loader's, reversed: the family's key map gives the HF tensors (exactly what
save_pretrained writes), names.py renames them to llama.cpp's names and re-applies the Llama q/k
permutation, config.py turns the config.json dict into metadata, and the tokenizer's metadata comes
from an HF folder (tokenizer.model or a byte-level tokenizer.json) or from another GGUF.

Tensor types follow llama.cpp's convert_hf_to_gguf.py: vectors (norms, biases) stay F32; matrices
take the requested type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, quantized by gguf.quants, llama.cpp's
reference code); a matrix whose rows are not a whole number of 32-value blocks falls back to F16,
as llama.cpp's converter does. The file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, UnsupportedModelError
from ..families import check_expressible, get_family
from .config import TOKEN_ID_KEYS, arch_for_family, gguf_metadata
from .names import gguf_name, permute, qk_heads
from .reader import _gguf
from .rope import rope_items
from .tokenizer import tokenizer_metadata

TYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1"}
# general.file_type (llama.cpp's LlamaFileType) for each output type
FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "BF16": 32}


def write_gguf(model, path: str | Path, type: str = "f16", tokenizer: dict | str | Path | None = None,
               name: str | None = None) -> Path:  # fmt: skip
    """Write `model` to `path` as a GGUF of `type` (f32, f16, bf16, q8_0, q4_0, q4_1).

    tokenizer: GGUF tokenizer metadata (a dict of tokenizer.* keys), or an HF folder whose tokenizer is
    converted; None writes no tokenizer (transformers and tinyslm still load the weights; llama.cpp needs one).
    """
    gguf = _gguf()
    if type not in TYPES:
        raise UnsupportedModelError(f"GGUF type {type!r} is not supported for writing; choose one of {', '.join(TYPES)}")
    kind = TYPES[type]
    config = model.config
    family = get_family(config.family, f"config {config.name!r}")
    arch = arch_for_family(config.family, f"config {config.name!r}")
    hf = check_expressible(family, config.replace(dtype="float32"))  # refuses what the family cannot express
    problems = arch.refuse(config)
    if problems:
        raise UnsupportedModelError(f"config {config.name!r}: a GGUF of llama.cpp architecture {arch.name!r} "
                                    f"cannot hold {'; '.join(problems)}")  # fmt: skip
    rope_metadata, rope_tensors = rope_items(config, arch.name)  # refuses a scaling llama.cpp cannot store
    metadata = gguf_metadata(arch, hf, config)
    metadata += [item for item in rope_metadata if item[0] not in {key for key, _, _ in metadata}]  # (phi3: its own key)
    tok_meta = tokenizer_metadata(Path(tokenizer)) if isinstance(tokenizer, (str, Path)) else dict(tokenizer or {})
    params = dict(model.named_parameters())
    for module_name, module in model.named_modules():
        if module.__class__.__module__.startswith("tinyslm.quant"):
            raise UnsupportedModelError(f"{module_name}: a quantized layer; load the model with keep_quantized=False to write it")

    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give the .gguf file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch.name)
        writer.add_name(name or config.name)
        writer.add_file_type(FILE_TYPES[kind])
        if kind.startswith("Q"):
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        setters = {"float32": writer.add_float32, "uint32": writer.add_uint32, "string": writer.add_string,
                   "bool": writer.add_bool}  # fmt: skip
        for key, value, vtype in metadata:
            setters[vtype](key, value)
        _add_tokenizer(writer, gguf, tok_meta, config)
        for hf_key, entry in family.key_map(model).entries.items():
            parts = [params[o].detach().to("cpu", torch.float32) for o in entry.ours]
            by_part = arch.qkv_by_part and entry.rule is not None and entry.rule.per_head
            tensor = torch.cat(parts) if by_part else entry.pack(parts)
            if entry.rule is not None and entry.rule.transposed and tensor.dim() == 2:
                tensor = tensor.t()  # GPT-2's Conv1D [in, out]: llama.cpp stores every matrix as [out, in]
            if arch.norm_offset and hf_key.endswith("norm.weight"):
                tensor = tensor + arch.norm_offset
            data = tensor.contiguous().numpy()
            heads = qk_heads(hf_key, config.n_heads, config.n_kv_heads) if arch.permuted_qk else None
            if heads is not None:
                data = np.ascontiguousarray(permute(data, heads))
            _add_tensor(writer, gguf, gguf_name(arch.name, config.n_layers, hf_key), data, kind)
        for tensor_name, tensor in rope_tensors.items():
            _add_tensor(writer, gguf, tensor_name, tensor.numpy(), "F32")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # never a half-written file under the real name
        raise
    return path


def _add_tensor(writer, gguf, name: str, data: np.ndarray, kind: str) -> None:
    if data.ndim < 2 or kind == "F32":
        writer.add_tensor(name, data.astype(np.float32))
        return
    qtype = gguf.GGMLQuantizationType[kind]
    if kind == "F16" or data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        writer.add_tensor(name, data.astype(np.float16))  # llama.cpp's fallback for rows that are not whole blocks
        return
    writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


def _add_tokenizer(writer, gguf, meta: dict[str, Any], config) -> None:
    """Tokenizer metadata, then the model's own special ids where the tokenizer names none."""
    setters = {
        "tokenizer.ggml.model": writer.add_tokenizer_model, "tokenizer.ggml.pre": writer.add_tokenizer_pre,
        "tokenizer.ggml.tokens": writer.add_token_list, "tokenizer.ggml.scores": writer.add_token_scores,
        "tokenizer.ggml.token_type": writer.add_token_types, "tokenizer.ggml.merges": writer.add_token_merges,
        "tokenizer.ggml.bos_token_id": writer.add_bos_token_id, "tokenizer.ggml.eos_token_id": writer.add_eos_token_id,
        "tokenizer.ggml.unknown_token_id": writer.add_unk_token_id,
        "tokenizer.ggml.padding_token_id": writer.add_pad_token_id,
        "tokenizer.ggml.add_bos_token": writer.add_add_bos_token, "tokenizer.chat_template": writer.add_chat_template,
    }  # fmt: skip
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens and len(tokens) < config.vocab_size:  # padded embedding rows get placeholder tokens, as llama.cpp writes
        pad = range(len(tokens), config.vocab_size)
        meta = dict(meta, **{"tokenizer.ggml.tokens": list(tokens) + [f"[PAD{i}]" for i in pad]})
        for key, filler in (("tokenizer.ggml.token_type", 5), ("tokenizer.ggml.scores", -1000.0)):  # 5: UNUSED
            if meta.get(key) is not None:
                meta[key] = list(meta[key]) + [filler] * len(pad)
    elif tokens and len(tokens) > config.vocab_size:
        raise UnsupportedModelError(f"the tokenizer has {len(tokens)} tokens, more than the model's {config.vocab_size}")
    for key, value in meta.items():
        if key in setters and value is not None:
            setters[key](value)
    for key, field in TOKEN_ID_KEYS:
        value = getattr(config, field)
        value = value[0] if isinstance(value, (list, tuple)) and value else value
        if key not in meta and isinstance(value, int):
            setters[key](value)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
