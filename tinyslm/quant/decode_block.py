"""Moved to tinyslm.runtime.decode_block (the native decoding step runs bfloat16 and float32 models too, not only
quantized ones); its public names stay importable from here."""

from ..runtime.decode_block import NativeArgs, block_step, native_blocks, native_decode, why_not_native  # noqa: F401
