"""gpt_neox: Pythia and Dolly-v2 (GPTNeoXForCausalLM), shrunken.

"gpt-neox-pythia" mirrors EleutherAI/pythia-160m (huggingface.co/EleutherAI/pythia-160m config.json:
hidden 768 = 12 heads x 64, intermediate 4 x hidden, rotary_pct 0.25, rotary_emb_base 10000,
use_parallel_residual true, gelu, untied embed_out, bos = eos = 0); Dolly-v2-3B
(databricks/dolly-v2-3b config.json) is the same recipe at hidden 2560 / 32 layers.
"gpt-neox-sequential" keeps rotary_pct 0.25 but turns the parallel residual off
(use_parallel_residual=false: y = x + attn(LN_1 x), out = y + mlp(LN_2 y)), and also exercises the other
GPTNeoXConfig switches real files may set: attention_bias=false, a tied head, another RoPE base.

Legacy form: the released config.json files spell the RoPE settings rotary_pct / rotary_emb_base at the
top level (GPTNeoXConfig ignores top-level rope_theta / partial_rotary_factor), so the legacy rewrite
renames them.
"""

from . import Case


def pythia_hub_spelling(cfg: dict) -> dict:
    """The generic legacy form -> Pythia's: rotary_emb_base / rotary_pct, no rope_scaling key."""
    cfg = dict(cfg)
    cfg["rotary_emb_base"] = cfg.pop("rope_theta")
    cfg["rotary_pct"] = cfg.pop("partial_rotary_factor")
    if cfg.get("rope_scaling") is None:
        cfg.pop("rope_scaling", None)
    return cfg


CASES = {
    # bf16: measured 0 (bit-equal logits, seeds 1-5): ParallelBlock sums (ffn + attn) + x as GPTNeoXLayer does;
    # the order x + attn + ffn measured 9.66e-3
    "gpt-neox-pythia": Case("GPTNeoXConfig", dict(vocab_size=512, hidden_size=64, intermediate_size=256,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=2048,
                            rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25),
                            use_parallel_residual=True, hidden_act="gelu", layer_norm_eps=1e-5,
                            tie_word_embeddings=False, bos_token_id=0, eos_token_id=0),
                            bf16_tolerance=1e-6, legacy_rewrite=pythia_hub_spelling),
    # bf16: measured 0 (bit-equal logits, seeds 1-10)
    "gpt-neox-sequential": Case("GPTNeoXConfig", dict(vocab_size=512, hidden_size=96, intermediate_size=384,
                                num_hidden_layers=2, num_attention_heads=6, max_position_embeddings=1024,
                                rope_parameters=dict(rope_type="default", rope_theta=25000.0,
                                                     partial_rotary_factor=0.25),
                                use_parallel_residual=False, attention_bias=False, hidden_act="gelu",
                                layer_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0),
                                bf16_tolerance=1e-4, legacy_rewrite=pythia_hub_spelling),
}  # fmt: skip
