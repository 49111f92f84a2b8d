"""tinyslm: small-language-model architectures, from scratch, checked against transformers.

    import tinyslm
    model = tinyslm.load_pretrained("path/to/TinyLlama-1.1B")         # HF folder -> CausalLM
    tok = tinyslm.load_tokenizer("path/to/TinyLlama-1.1B")
    ids = torch.tensor([tok.encode("Once upon a time")])
    out = tinyslm.generate(model, ids, max_new_tokens=32, eos_token_id=tok.eos_id)
    print(tok.decode(out[0].tolist()))

    model = tinyslm.load_pretrained("SmolLM2-135M-Instruct.Q4_1.gguf")  # a GGUF: 4-bit weights stay 4-bit
    tinyslm.quantize(model, "int8")                                     # or quantize a float model in place

The package is in layers, and a module imports only from its own layer and the ones above it here
(tests/test_imports.py holds this map as LAYERS and checks every import, and that no two modules
import each other):

    foundation   errors, files, machine               exceptions, careful file reading, cores and threads
    config       config, layerwise, rope_scaling      ModelConfig: the architecture as checked data
    reference    layers/, model, sizing, sampling,    the plain decoder, readable top to bottom
                 generate
    families     families/                            config.json <-> ModelConfig, HF names <-> ours
    formats      checkpoint, tokenizer(_types), gguf/, files on disk: HF folders, GGUF, tokenizers, chat templates
                 chat_template
    runtime      quant/, runtime/, pretrained         kernels, quantized linears, fast decode steps
    experiments  train/, data/, ablate/, tools/,      what is done with a model (and the course's checkers)
                 chat/, course/
    cli          cli, */command.py                    the `tinyslm` command
    api          tinyslm/__init__.py                  these names

So the reference never learns about files or kernels: a format fills the model it builds, and the
runtime plugs into a seam the layer below names (a GGUF's quantized blocks reach tinyslm.quant through
gguf.loader.KeptLinears, which pretrained.py fills for `load_pretrained`).
"""

import os as _os
import sys as _sys

# torch's OpenMP threads (libgomp) spin for up to GOMP_SPINCOUNT `pause` instructions before they sleep: 300,000
# by default, milliseconds, which on a busy machine are spent waiting for a partner thread that the OS has
# descheduled (training and prompts then slow down by far more than the load). libgomp reads this once, when
# torch loads it: a shorter spin is set here when tinyslm is imported before torch (the CLI always is) and the
# user chose no wait policy of their own. The native kernels wait in their own way (kernels/threads.h).
if "torch" not in _sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & _os.environ.keys():
    _os.environ["GOMP_SPINCOUNT"] = "10000"

from .checkpoint import load_config, save_pretrained  # noqa: E402
from .config import LayerShape, LayerSpec, ModelConfig  # noqa: E402
from .errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    GenerationError,
    TinySLMError,
    TokenizerError,
    UnsupportedModelError,
)
from .runtime import generate  # noqa: E402  (the reference decoder with the runtime's fast paths)
from .model import CausalLM  # noqa: E402
from .pretrained import load_pretrained  # noqa: E402
from .quant import QuantizedLinear, quantize  # noqa: E402
from .tokenizer import load_chat_template, load_tokenizer  # noqa: E402

# `tinyslm --version` prints the installed package's version, this one only when there is no metadata (a source
# tree on sys.path); keep it equal to pyproject.toml's (tests/cli/test_cli_examples.py checks)
__version__ = "0.1.0"

__all__ = [
    "CausalLM", "ModelConfig", "LayerSpec", "LayerShape", "load_config", "load_pretrained", "save_pretrained", "generate",
    "load_tokenizer", "load_chat_template", "TinySLMError", "ConfigError", "CheckpointError", "UnsupportedModelError", "GenerationError",
    "TokenizerError", "quantize", "QuantizedLinear",
]  # fmt: skip
