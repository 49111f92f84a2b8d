"""Loading a pretrained model, ready to run: an HF checkpoint folder or a GGUF file -> CausalLM.

    tinyslm.load_pretrained(path)   a folder (checkpoint.load_hf_folder) or a GGUF (load_gguf), by what path is
    tinyslm.gguf.load_gguf(path)    a GGUF, its quantized matrices kept quantized in tinyslm.quant's kernels

The formats (checkpoint.py, gguf/) read files into the plain model and know no kernels; the runtime
(tinyslm.quant) knows no files. This module joins them at one seam, `gguf.loader.KeptLinears`: which
layer a GGUF's quantized blocks become. That is why it sits above both (the layer map is in
tinyslm/__init__.py; tests/test_imports.py checks it).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import load_hf_folder
from .config import ModelConfig
from .errors import CheckpointError
from .files import read_json, shown
from .gguf.loader import KeptLinears, gguf_path, is_gguf, model_from_gguf
from .gguf.reader import GGUFFile
from .model import CausalLM
from .quant import GGMLLinear, QuantizedLinear, native
from .quant.blocks import quantize_blocks

# ggml types whose blocks map exactly onto torch's int8 / int4 kernels (groups of 32), and those the native
# kernel takes as they are (GGMLLinear)
KEPT_PACKED = ("Q8_0", "Q4_0", "Q4_1")
KEPT_BLOCKS = (*KEPT_PACKED, "Q4_K", "Q6_K")


def quantized_linear_factory():
    """What keeps a GGUF's quantized matrices quantized: `GGMLLinear.from_gguf` (the file's own blocks, native
    kernel) where that kernel builds, else `QuantizedLinear.from_gguf` (torch's int8/int4 kernels)."""
    return GGMLLinear.from_gguf if native.available() else QuantizedLinear.from_gguf


def kept_linears(factory=None) -> KeptLinears:
    """The seam filled with tinyslm.quant's layers: the native kernel's types as stored, and the others re-quantized
    to Q8_0 blocks; or torch's int8/int4 kernels for the types they hold exactly (`factory`: one of the two, or
    a stand-in taking the same arguments; default `quantized_linear_factory()`)."""
    factory = quantized_linear_factory() if factory is None else factory
    if factory == GGMLLinear.from_gguf:
        return KeptLinears(factory, KEPT_BLOCKS, requantize=quantize_blocks)
    return KeptLinears(factory, KEPT_PACKED)


def load_gguf(
    path: str | Path,
    dtype: torch.dtype | str | None = None,
    keep_quantized: bool | None = None,
    device: str | torch.device = "cpu",
) -> CausalLM:
    """Build a CausalLM from a GGUF file (or a folder holding one).

    dtype: of the float parameters; None means bfloat16 for a file whose matrices are all BF16, else
    float32 (F16 and every quantized type upcast exactly).
    keep_quantized: keep quantized linear weights quantized (default; `kept_linears` says how each type
    is kept); False dequantizes everything, as transformers does.
    """
    linears = kept_linears() if keep_quantized in (None, True) else None
    return model_from_gguf(path, dtype=dtype, device=device, linears=linears)


def load_pretrained(
    path: str | Path,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
    allow_pickle: bool = False,
    keep_quantized: bool | None = None,
) -> CausalLM:
    """Build a CausalLM from an HF checkpoint folder (or a GGUF file) and load its weights (strictly checked).

    dtype: of the parameters; None means float32 for a folder (as transformers loads one) and the
    file's own precision for a GGUF (bfloat16 for a BF16 file, quantized weights kept quantized;
    see `load_gguf`). keep_quantized=False: a GGUF's quantized weights dequantized into plain float
    layers, as transformers loads the file (for a parity check); a folder has none to keep."""
    folder = Path(path).expanduser()
    if is_gguf(folder):  # a .gguf file, or a folder holding one and no config.json
        return load_gguf(folder, dtype=dtype, device=device, keep_quantized=keep_quantized)
    return load_hf_folder(folder, dtype=dtype, device=device, allow_pickle=allow_pickle)


def end_ids(path: str | Path, config: ModelConfig) -> list[int]:
    """Every token id that ends a reply, as the checkpoint declares them: config.json's eos_token_id (one or a
    list), generation_config.json's (chat models often list their end-of-turn token only there), and a GGUF's
    end-of-turn and end-of-message ids beside its eos."""
    ids = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    path = Path(path).expanduser()
    if is_gguf(path):
        file = GGUFFile(gguf_path(path))
        found = {key: file.get(key) for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")}
        where = str(file.path)
    elif (path / "generation_config.json").is_file():
        where = str(path / "generation_config.json")
        found = {"eos_token_id": read_json(path / "generation_config.json").get("eos_token_id")}
    else:
        found, where = {}, ""
    for key, value in found.items():
        for i in value if isinstance(value, list) else [value]:
            if i is None:
                continue
            if type(i) is not int or i < 0:
                raise CheckpointError(f"{where}: {key} must be token ids (integers >= 0), found {shown(repr(value))}")
            ids.append(i)
    # (an id past the vocabulary, as configs carry from their class's defaults, can never be produced)
    return sorted({i for i in ids if i is not None and i < config.vocab_size})
