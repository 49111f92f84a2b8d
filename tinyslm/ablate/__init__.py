"""The attention ablation: variants of one model trained on identical batches, measured side by side.

    (the spec "mha,gqa:2,mqa,mla,swa:64,sharedffn,scale" -> configs: tools/variants.py, parse_variants)
    run.py       each variant x seed: LM run, MQAR run, KV-cache bytes (as `tinyslm inspect`), speeds
    report.py    mean and spread over seeds, report.md, results.json, PNG plots
    command.py   `tinyslm ablate`
"""

from .report import summarize, write_outputs
from .run import AblationSettings, kv_figures, run_ablation
from ..tools.variants import Variant, parse_variants

__all__ = ["AblationSettings", "Variant", "parse_variants", "run_ablation", "kv_figures", "summarize", "write_outputs"]
