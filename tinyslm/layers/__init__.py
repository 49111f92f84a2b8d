"""The parts a model is built from: attention (MHA/MQA/GQA, MLA), RoPE and other positions, norms, FFNs,
blocks and the KV cache. Each file is one concept and reads top to bottom."""
