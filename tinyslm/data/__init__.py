"""Training data: corpora, tokenizers, packed token streams, the embedded corpus and the MQAR probe.

    from tinyslm.data import prepare_data, Batches, eval_batches, MQAR
    data = prepare_data(None)                        # the embedded procedural corpus, tokenized and cached
    batches = Batches(data.train, seq_len=128, global_batch=32, seed=0)
    inputs, targets = next(batches)                  # (32, 128) int64 each
    val = eval_batches(data.val, seq_len=128, batch=32)

Modules, one concept each:
    corpus.py           reading .txt / .jsonl / folders into documents, with errors naming file and offset
    synthetic.py        the embedded corpus: stories, arithmetic, facts to recall, lists (seeded)
    tokenizer_train.py  a byte-exact sentencepiece BPE tokenizer trained on a corpus
    prepare.py          documents -> train/val split -> memory-mapped token streams, cached
    stream.py           Batches (random windows, rank-sliced, resumable) and eval_batches
    mqar.py             multi-query associative recall (Zoology), the attention probe
    command.py          `tinyslm tokenizer train`
"""

from .corpus import DataError, iter_documents
from .mqar import MQAR, MQARBatches
from .prepare import TokenData, prepare_data
from .stream import Batches, eval_batches
from .synthetic import generate_documents
from .tokenizer_train import train_tokenizer

__all__ = [
    "prepare_data", "TokenData", "Batches", "eval_batches", "MQAR", "MQARBatches", "DataError", "iter_documents",
    "generate_documents", "train_tokenizer",
]  # fmt: skip
