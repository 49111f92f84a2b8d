"""GGUF, llama.cpp's single-file format: read it into a tinyslm model, write one back, convert.

    import tinyslm
    model = tinyslm.load_pretrained("SmolLM2-135M-Instruct.Q4_1.gguf")   # or tinyslm.gguf.load_gguf(...)
    plain = tinyslm.gguf.model_from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")  # the format alone: all dequantized
    tok = tinyslm.load_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")      # rebuilt from the metadata
    tinyslm.gguf.write_gguf(model, "out.gguf", "q8_0", tokenizer="path/to/hf_folder")

    reader.py     open and check a file (truncation, types, sizes), dequantize
    config.py     metadata <-> config.json dict, per llama.cpp architecture
    names.py      llama.cpp tensor names <-> HF names; the Llama q/k row permutation
    loader.py     GGUF -> CausalLM (quantized linear weights stay packed through the KeptLinears seam, which
                  tinyslm.quant fills: tinyslm.gguf.load_gguf, in tinyslm/pretrained.py)
    tokenizer.py  metadata -> tokenizer (sentencepiece-style and byte-level BPE), and back
    writer.py     CausalLM -> GGUF (F32, F16, BF16, Q8_0, Q4_0, Q4_1)
    command.py    `tinyslm convert`

Needs the `gguf` package (pip install 'tinyslm[gguf]'), imported only when a GGUF is touched.
"""

from .loader import KeptLinears, gguf_config, gguf_path, gguf_tensor_bytes, is_gguf, model_from_gguf
from .tokenizer import gguf_tokenizer
from .writer import write_gguf

__all__ = ["load_gguf", "model_from_gguf", "KeptLinears", "gguf_config", "gguf_tokenizer", "write_gguf", "is_gguf",
           "gguf_path", "gguf_tensor_bytes"]  # fmt: skip


def __getattr__(name: str):
    """`tinyslm.gguf.load_gguf`: a GGUF with its quantized weights in tinyslm.quant's kernels, which this package
    (a format) does not import; it lives in pretrained.py, above both, and is found here on first use (PEP 562)."""
    if name == "load_gguf":
        from ..pretrained import load_gguf  # noqa: PLC0415  (old import path; tests/test_imports.py)

        return load_gguf
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
