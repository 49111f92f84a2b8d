"""gpt2: Cerebras-GPT-111M (n_embd 768, 10 layers, 12 heads, n_inner 3072, 2048 positions, exact-erf "gelu";
huggingface.co/cerebras/Cerebras-GPT-111M config.json) and LaMini-GPT-774M (GPT-2 large: n_embd 1280, 36 layers,
20 heads, n_inner null -> 4 x 1280, 1024 positions, "gelu_new", vocab 50258; huggingface.co/MBZUAI/LaMini-GPT-774M
config.json), shrunken: vocab 512, 2 layers, head_dim 16, the position table small but longer than
prompt + 16 generated tokens. Both tie the head to wte (the GPT2Config default).

"gpt2-switches" turns on GPT2Config's other accepted switches, which no model above uses: no softmax
scaling (scale_attn_weights=false), an untied head (lm_head.weight stored) and reorder_and_upcast_attn
(transformers' eager path then computes q.k and the softmax in float32; only rounding changes).
"""

from . import Case

# keys transformers 5 writes that these models' Hub files may lack; all hold their defaults in the cases
# that use hub_form, so dropping them checks that tinyslm defaults them as transformers does
_NEWER_KEYS = ("rope_theta", "rope_scaling", "add_cross_attention", "pad_token_id", "reorder_and_upcast_attn",
               "tie_word_embeddings")  # fmt: skip


def hub_form():
    """config.json in the Hub repos' form: GPT-2's own key names plus `n_ctx` (= n_positions; transformers
    does not read it), `torch_dtype`, without the keys later transformers versions write."""

    def rewrite(cfg: dict) -> dict:
        cfg = {k: v for k, v in cfg.items() if k not in _NEWER_KEYS}
        return {**cfg, "n_ctx": cfg["n_positions"]}

    return rewrite


CASES = {
    "gpt2-cerebras": Case("GPT2Config", dict(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_inner=256,
                          n_positions=40, activation_function="gelu", layer_norm_epsilon=1e-5,
                          bos_token_id=511, eos_token_id=511),
                          bf16_tolerance=1e-6,  # measured 0: bit-identical to transformers' eager path
                          legacy_rewrite=hub_form()),
    "gpt2-lamini": Case("GPT2Config", dict(vocab_size=512, n_embd=80, n_layer=2, n_head=5, n_inner=None,
                        n_positions=32, activation_function="gelu_new", bos_token_id=511, eos_token_id=511),
                        # measured 4.9e-3 (max over 5 prompts), with gelu_new written out op by op as
                        # transformers does (torch's one-kernel tanh GELU measured 7.9e-3)
                        bf16_tolerance=6e-3,
                        legacy_rewrite=hub_form()),
    "gpt2-switches": Case("GPT2Config", dict(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=36,
                          activation_function="gelu", scale_attn_weights=False, reorder_and_upcast_attn=True,
                          tie_word_embeddings=False, bos_token_id=0, eos_token_id=0),
                          # measured 9.9e-3 (max over 5 prompts): with reorder_and_upcast_attn transformers keeps
                          # the unscaled scores in float32; ours round them to bf16 before the (float32) softmax
                          bf16_tolerance=1.2e-2),
}  # fmt: skip
