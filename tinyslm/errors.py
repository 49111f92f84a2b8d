"""The exceptions tinyslm raises, one per kind of failure.

Every message names what the user can act on: the file, the key, the expected and the found
value. The CLI prints `error: <message>` for any of them and exits non-zero.
"""


class TinySLMError(Exception):
    """Base class: anything tinyslm refuses on purpose."""


class ConfigError(TinySLMError, ValueError):
    """A model configuration (TOML, config.json or ModelConfig) is missing a field or is inconsistent."""


class CheckpointError(TinySLMError):
    """A checkpoint folder or weight file is missing, corrupt, or does not match the config."""


class UnsupportedModelError(TinySLMError):
    """A checkpoint's `model_type` (or one of its features) is not implemented here."""


class GenerationError(TinySLMError, ValueError):
    """A decoding request cannot be served (empty prompt, too long, negative length...)."""


class TokenizerError(TinySLMError):
    """No usable tokenizer file, or one that cannot be read."""


class UsageError(TinySLMError):
    """A bad option value that argparse's types cannot catch (the CLI prints it as one line, exit status 2)."""
