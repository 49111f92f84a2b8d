"""The runtime's decoding paths: faster ways to run a model's decoding step, plugged into generate.py's `Decoder`.

    decoding.py      fast_decoding(model, fast): the one switch; yields the decoder tinyslm.generate uses,
                     which reports the path that ran (`path`) and the compile's seconds (`compile_s`)
    decode_block.py  the native step: a token's blocks in one C++ call (kernels/decode_block.cpp)
    compiled.py      the compiled step: blocks compiled by torch.compile over a static cache (StaticKVBuffer)

    from tinyslm.runtime import fast_decoding
    with fast_decoding(model) as decoder:
        out = tinyslm.generate(model, ids, 32, decoder=decoder)
    print(decoder.path, decoder.compile_s)

The kernels themselves and the quantized linear layers live in tinyslm.quant.
"""

from .compiled import CACHE_BUCKET, CompiledStep, StaticKVBuffer, static_cache, supports_compiled
from .decode_block import native_blocks, native_decode, why_not_native
from .decoding import AUTO_COMPILE_TOKENS, FAST_CHOICES, FastDecoder, fast_decoding, generate

__all__ = ["AUTO_COMPILE_TOKENS", "CACHE_BUCKET", "FAST_CHOICES", "CompiledStep", "FastDecoder", "StaticKVBuffer",
           "fast_decoding", "generate", "native_blocks", "native_decode", "static_cache", "supports_compiled",
           "why_not_native"]  # fmt: skip
