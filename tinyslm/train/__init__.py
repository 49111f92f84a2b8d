"""Training: AdamW, warmup + cosine, accumulation, bf16 autocast, validation, checkpoints, DDP/FSDP2.

    from tinyslm.train import TrainConfig, train
    result = train(model_config, batches, TrainConfig(steps=500, batch_size=32, seq_len=128), val=..., out="runs/a")

optim.py        parameter groups (weight decay on matrices only) and the learning-rate schedule
trainer.py      the loop: TrainConfig, train(), TrainResult, evaluate()
state.py        checkpoints: HF folder + trainer_state.pt, written whole and renamed; exact resume
distributed.py  torchrun environment, DDP (gloo / nccl) and FSDP2 wrapping
command.py      `tinyslm train`;  bench.py  `tinyslm train-bench`
"""

from .distributed import world_from_env
from .optim import lr_at, make_optimizer, param_groups
from .trainer import TrainConfig, TrainError, TrainResult, evaluate, loss_sum, next_token_loss, train

__all__ = ["TrainConfig", "TrainResult", "TrainError", "train", "evaluate", "next_token_loss", "loss_sum",
           "make_optimizer", "param_groups", "lr_at", "world_from_env"]  # fmt: skip
