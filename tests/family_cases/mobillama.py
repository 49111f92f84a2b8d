"""mobillama: MobiLlama's one FFN shared by every block (MBZUAI/MobiLlama-05B; hub configs carry an ignored
num_key_value_heads, 2 here, and the model runs MHA).

MobiLlama ships remote code (no transformers class). Its reference is transformers' LlamaForCausalLM (MHA) whose
layers all hold copies of the one FFN; the checkpoint stores the FFN either in layer 0 only (what a safetensors save
of the shared module keeps) or in every layer.
"""

from __future__ import annotations

from pathlib import Path

from . import Case

from hf_models import small_llama, write_folder  # isort: skip

HPARAMS = dict(vocab_size=96)  # the rest: hf_models.small_llama's Llama, 4 layers, MHA


def mobillama_reference(layers: int = 4):
    """(the Llama whose layers hold copies of layer 0's FFN, MobiLlama's config.json for it)."""
    hf = small_llama(num_hidden_layers=layers, num_key_value_heads=4)  # MHA: MobiLlama's attention
    for layer in hf.model.layers[1:]:
        layer.mlp.load_state_dict(hf.model.layers[0].mlp.state_dict())  # copies of the one FFN
    cfg = hf.config.to_dict()
    cfg.update(architectures=["MobiLlamaForCausalLM"], num_key_value_heads=2)  # the hub configs' ignored kv count
    return hf, cfg


def stored(where: str):
    def write(folder: Path, legacy: bool):
        hf, cfg = mobillama_reference()
        tensors = dict(hf.state_dict())
        if where == "layer 0 only":
            tensors = {k: v for k, v in tensors.items() if ".mlp." not in k or k.startswith("model.layers.0.")}
        write_folder(folder, cfg, tensors, legacy)
        return lambda ids: hf(ids).logits

    return write


def one_shared_ffn(model, _hf_model) -> None:
    assert all(block.ffn is model.blocks[0].ffn for block in model.blocks)
    assert model.config.family == "mobillama" and model.config.n_kv_heads == model.config.n_heads


CASES = {
    "mobillama-ffn-stored-once": Case(None, HPARAMS, remote=stored("layer 0 only"), family="mobillama",
                                      bf16_tolerance=None, expect=one_shared_ffn),
    "mobillama-ffn-stored-in-every-layer": Case(None, HPARAMS, remote=stored("every layer"), family="mobillama",
                                                bf16_tolerance=None, expect=one_shared_ffn),
}  # fmt: skip
