"""`tinyslm convert SRC DST [--type ...]`: HF folder <-> GGUF file, so llama.cpp runs a tinyslm model
and transformers runs a GGUF.

    HF folder -> .gguf    load_hf_folder, then writer.py (tokenizer.model / tokenizer.json converted)
    .gguf -> HF folder    model_from_gguf (dequantized), save_pretrained, tokenizer.json + tokenizer_config.json
    .gguf -> .gguf        re-typed (e.g. f16 -> q8_0), tokenizer metadata copied

Outputs appear whole or not at all: a file is written under a temporary name and renamed, a folder
is built beside the target and renamed into place.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from ..checkpoint import install_folder, load_hf_folder, save_pretrained
from ..errors import CheckpointError
from .loader import gguf_path, is_gguf, model_from_gguf
from .reader import GGUFFile
from .tokenizer import write_tokenizer_files
from .writer import write_gguf

EXAMPLES = """examples:
  tinyslm convert ~/models/SmolLM2-135M smollm2-135m.q8_0.gguf --type q8_0
  tinyslm convert SmolLM2-135M-Instruct.Q4_1.gguf ~/models/smollm2-from-gguf     # an HF folder, float32
  tinyslm convert model.f16.gguf model.q4_0.gguf --type q4_0
"""
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1")
FOLDER_TYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert between an HF checkpoint folder and a GGUF file (llama.cpp), either way",
        description="Convert an HF checkpoint folder (config.json + safetensors + tokenizer) to a GGUF file that "
        "llama.cpp and transformers read, or a GGUF file to an HF folder (safetensors, config.json, tokenizer.json), "
        "or a GGUF to a GGUF of another type. The direction follows DST: a name ending in .gguf is a GGUF file, "
        "anything else a folder. Quantized GGUF weights are dequantized for a folder. Families (llama.cpp architecture "
        "names): llama, qwen2, qwen3, phi3, stablelm, nemotron, gpt2, bloom, gemma, gemma2, gemma3, olmo, phi2 (phi), "
        "gptneox (gpt_neox).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="an HF checkpoint folder, a .gguf file, or a folder holding one .gguf")
    p.add_argument("dst", metavar="DST", help="the .gguf file or the HF folder to write (must not exist unless --force)")
    p.add_argument("--type", choices=GGUF_TYPES, default=None,
                   help="GGUF output: tensor type of the matrices (default f16; vectors stay f32); folder output: "
                   "f32 (default), f16 or bf16")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.set_defaults(run=run)


def run(args) -> int:
    src, dst = Path(args.src).expanduser(), Path(args.dst).expanduser()
    if not src.exists():
        raise CheckpointError(f"{src}: no such file or folder")
    if dst.exists() and not args.force:
        raise CheckpointError(f"{dst}: already exists; choose another name or pass --force")
    from_gguf = is_gguf(src)
    if dst.suffix == ".gguf":
        kind = args.type or "f16"
        if from_gguf:
            source = GGUFFile(gguf_path(src))
            model = model_from_gguf(source.path, dtype="float32")  # dequantized
            tokenizer = {k: v for k, v in source.metadata.items() if k.startswith("tokenizer.")}
        else:
            model = load_hf_folder(src, dtype="float32")
            has_tokenizer = (src / "tokenizer.json").is_file() or (src / "tokenizer.model").is_file()
            tokenizer = src if has_tokenizer else None
            if tokenizer is None:
                print(f"note: {src} has no tokenizer; the GGUF holds none (llama.cpp needs one, transformers does not)")
        write_gguf(model, dst, kind, tokenizer=tokenizer)
        print(f"wrote {dst} ({kind}, {dst.stat().st_size / 2**20:.1f} MiB)")
        return 0
    if not from_gguf:
        raise CheckpointError(f"{dst}: converting a folder to a folder is not a conversion; name a .gguf file as DST")
    kind = args.type or "f32"
    if kind not in FOLDER_TYPES:
        raise CheckpointError(f"--type {kind}: an HF folder holds f32, f16 or bf16 weights (GGUF quantization is undone)")
    _gguf_to_folder(gguf_path(src), dst, FOLDER_TYPES[kind])
    print(f"wrote {dst} ({FOLDER_TYPES[kind]} safetensors, config.json, tokenizer)")
    return 0


def _gguf_to_folder(src: Path, dst: Path, dtype: str) -> None:
    model = model_from_gguf(src, dtype=dtype)  # dequantized
    meta = GGUFFile(src).metadata
    dst = dst.absolute()
    if dst.exists() and not dst.is_dir():
        raise CheckpointError(f"{dst}: exists and is not a folder; cannot write an HF folder there")
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tinyslm-convert-", dir=dst.parent))
    try:
        save_pretrained(model, staging / "out")
        if "tokenizer.ggml.tokens" in meta:
            write_tokenizer_files(meta, staging / "out", str(src))
        # swapped in as save_pretrained swaps: in one step, and every other file of an existing DST (the source
        # GGUF itself, a README, folders) kept; only the old checkpoint's own files are replaced
        install_folder(staging / "out", dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
