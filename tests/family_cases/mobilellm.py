"""mobilellm: MobileLLM's embedding sharing and immediate block repeat (facebook/MobileLLM-125M / -350M).

MobileLLM ships remote code (no transformers class). Its reference is transformers' LlamaForCausalLM with tied
embeddings (MobileLLM stores no head); the layer-share form is checked against a Llama of twice the depth whose
layers 2i and 2i+1 hold the same weights.
"""

from __future__ import annotations

from pathlib import Path

from . import Case

from hf_models import small_llama, write_folder  # isort: skip

HPARAMS = dict(vocab_size=96)  # the rest: hf_models.small_llama's Llama, 3 layers


def mobilellm_config(hf_model, layer_sharing: bool) -> dict:
    cfg = hf_model.config.to_dict()
    cfg.update(model_type="mobilellm", architectures=["MobileLLMForCausalLM"], share_embedding=True,
               tie_word_embeddings=False, layer_sharing=layer_sharing)  # fmt: skip
    return cfg


def logits_of(hf_model):
    return lambda ids: hf_model(ids).logits


def tied_llama(folder: Path, legacy: bool):
    hf = small_llama(tie_word_embeddings=True)
    tensors = {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}  # MobileLLM stores no head
    write_folder(folder, mobilellm_config(hf, layer_sharing=False), tensors, legacy)
    return logits_of(hf)


def llama_of_twice_the_depth(folder: Path, legacy: bool):
    deep = small_llama(num_hidden_layers=6, tie_word_embeddings=True)
    for i in range(0, 6, 2):  # layers 2i and 2i+1 hold the same weights
        deep.model.layers[i + 1].load_state_dict(deep.model.layers[i].state_dict())
    tensors = {}
    for key, value in deep.state_dict().items():
        if key == "lm_head.weight":
            continue
        if key.startswith("model.layers."):
            index = int(key.split(".")[2])
            if index % 2:
                continue
            key = key.replace(f"model.layers.{index}.", f"model.layers.{index // 2}.")
        tensors[key] = value
    cfg = mobilellm_config(deep, layer_sharing=True)
    cfg["num_hidden_layers"] = 3
    write_folder(folder, cfg, tensors, legacy)
    return logits_of(deep)


def shared_head(model, _hf_model) -> None:
    assert model.head.weight is model.tok_emb.weight


def shared_head_and_repeated_blocks(model, _hf_model) -> None:
    assert model.head.weight is model.tok_emb.weight
    assert len(model.blocks) == 3 and model.config.schedule() == [0, 0, 1, 1, 2, 2]
    cache = model.new_cache(1, 8)
    assert len(cache.layers) == 6  # one KV slot per depth step, not per stored block


CASES = {
    "mobilellm-tied": Case(None, HPARAMS, remote=tied_llama, family="mobilellm", bf16_tolerance=None,
                           expect=shared_head),
    "mobilellm-layer-share": Case(None, HPARAMS, remote=llama_of_twice_the_depth, family="mobilellm",
                                  bf16_tolerance=None, expect=shared_head_and_repeated_blocks),
}  # fmt: skip
