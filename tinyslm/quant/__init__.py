"""Fast CPU linear layers: weights that stay 8- or 4-bit, and bfloat16 or float32 products that stream at memory speed.

    linear.py     QuantizedLinear: int8 (a scale per row) or int4 (scale + zero per group), the
                  kernel choice (packed kernel for decoding, unpacked dense GEMM for prompts)
    quantize.py   quantize(model, "int8" | "int4"): swap a model's linear layers, in place
    blocks.py     GGMLLinear: a GGUF's Q4_0/Q4_1/Q8_0/Q4_K/Q6_K blocks, 8 rows interleaved (native kernel)
    float_mv.py   FloatLinear, float_kernels(model): bfloat16 and float32 layers through a native kernel while generating
    native.py     building and loading those kernels (kernels/*.cpp) on first use
    ggml.py       GGUF's Q4_0 / Q4_1 / Q8_0 blocks read into codes and scales
    int4pack.py   torch's packed int4 layout, and reading it back

    import tinyslm
    model = tinyslm.load_pretrained("path/to/TinyLlama-1.1B", dtype="bfloat16")
    tinyslm.quantize(model, "int4", group_size=32)       # in place; returns the model
"""

from .float_mv import FloatLinear, float_kernels
from .blocks import GGMLLinear
from .linear import INT4_GROUP_SIZES, KINDS, QuantizedLinear, prefill_plan
from .quantize import quantize, quantized_bytes

__all__ = ["FloatLinear", "GGMLLinear", "INT4_GROUP_SIZES", "KINDS", "QuantizedLinear", "float_kernels", "prefill_plan",
           "quantize", "quantized_bytes"]  # fmt: skip
