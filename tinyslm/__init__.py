"""tinyslm: small-language-model architectures, from scratch, checked against transformers.

    import tinyslm
    model = tinyslm.load_pretrained("path/to/TinyLlama-1.1B")         # HF folder -> CausalLM
    tok = tinyslm.load_tokenizer("path/to/TinyLlama-1.1B")
    ids = torch.tensor([tok.encode("Once upon a time")])
    out = tinyslm.generate(model, ids, max_new_tokens=32, eos_token_id=tok.eos_id)
    print(tok.decode(out[0].tolist()))

    model = tinyslm.load_pretrained("SmolLM2-135M-Instruct.Q4_1.gguf")  # a GGUF: 4-bit weights stay 4-bit
    tinyslm.quantize(model, "int8")                                     # or quantize a float model in place
"""

from .checkpoint import load_config, load_pretrained, save_pretrained
from .config import LayerShape, LayerSpec, ModelConfig
from .errors import (
    CheckpointError,
    ConfigError,
    GenerationError,
    TinySLMError,
    TokenizerError,
    UnsupportedModelError,
)
from .generate import generate
from .model import CausalLM
from .quant import QuantizedLinear, quantize
from .tokenizer import load_tokenizer

__all__ = [
    "CausalLM", "ModelConfig", "LayerSpec", "LayerShape", "load_config", "load_pretrained", "save_pretrained", "generate",
    "load_tokenizer", "TinySLMError", "ConfigError", "CheckpointError", "UnsupportedModelError", "GenerationError",
    "TokenizerError", "quantize", "QuantizedLinear",
]  # fmt: skip
