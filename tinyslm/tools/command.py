"""The commands that run a model: inspect, generate, parity, bench, demo (`tinyslm COMMAND`).

Registered as every command is (tinyslm/cli.py's COMMAND_MODULES): `add_parser(subparsers)` adds each
command with `set_defaults(run=...)`, and `run(args)` returns the exit status.
"""

from __future__ import annotations

import json
import math
import sys
import time

import torch

from .. import machine
from ..checkpoint import default_dtype, load_config
from ..config import dtype_from_name
from ..errors import TokenizerError, UsageError
from ..generate import check_request
from ..gguf.loader import gguf_tensor_bytes, is_gguf
from ..layers.attention import set_attention_backend
from ..pretrained import end_ids, load_pretrained
from ..quant import GGMLLinear, QuantizedLinear, quantize
from ..runtime import FAST_CHOICES, fast_decoding, generate
from ..sampling import Sampler
from ..tokenizer import load_chat_template, load_tokenizer
from ..tools.attention_costs import compare_attention, format_compare_attention, parse_contexts
from ..tools.bench import format_bench, run_bench
from ..tools.contention import format_contention, run_contention
from ..tools.demo import run_demo
from ..tools.parity import check_parity
from ..tools.sampling_bench import format_sampling_bench, run_sampling_bench
from ..tools.stats import format_stats, model_stats

QUANT_CHOICES = ["q8_0", "q4_0", "q4_1", "int8", "int4"]  # tinyslm.quantize kinds (quant/quantize.py)


def add_sampling_options(p) -> None:
    """The sampler's options (generate, chat); `sampling_options(args)` reads them back."""
    sampling = p.add_argument_group("sampling (greedy unless --temperature above 0, --top-k, --top-p or --min-p is "
                                    "given; applied as transformers applies them, in its order)")
    sampling.add_argument("--temperature", type=float, help="logits / T before sampling (0: greedy)")
    sampling.add_argument("--top-k", type=int, help="keep the k most likely tokens (0: all)")
    sampling.add_argument("--top-p", type=float, help="keep the fewest tokens whose probability reaches p (1: all)")
    sampling.add_argument("--min-p", type=float, help="keep tokens at least min-p x the top token's probability")
    sampling.add_argument("--repetition-penalty", type=float, help="lower the logits of tokens already in the text "
                          "(1: none; greedy decoding too)")
    sampling.add_argument("--seed", type=int, help="the sampler's seed: the same seed, the same text")


def sampling_options(args) -> dict:
    """The sampling options as tinyslm.generate's keyword arguments, checked (a bad value: one line, exit 2)."""
    choice = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                  repetition_penalty=args.repetition_penalty, seed=args.seed)  # fmt: skip
    Sampler(**choice)  # checked before anything is loaded
    return choice


def add_chat_options(p, needs: str | None = None) -> None:
    """--system and --template (generate --chat, chat)."""
    after = f" (with {needs})" if needs else ""
    p.add_argument("--system", metavar="TEXT", help=f"a system message opening the conversation{after}")
    p.add_argument("--template", metavar="FILE", help="a Jinja chat template file to use instead of the model's own "
                   f"(needed where the checkpoint has none){after}")


def chat_prompt(args, tokenizer) -> list[int]:
    """generate --chat's prompt: the system message (if any) and TEXT, written out by the chat template."""
    template = load_chat_template(args.checkpoint, args.template)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.chat}
    ]
    return tokenizer.encode(template.render(messages, add_generation_prompt=True), add_special_tokens=False)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="parameter counts, per-component breakdown, weight and KV-cache bytes",
        description="Count parameters (total; non-embedding = total minus token embedding, position table and an "
        "untied lm-head), break them down per component (a tied head or shared block counted once), and report "
        "weight bytes and KV-cache bytes per token and at a context length. Nothing is allocated.",
    )
    p.add_argument("target", metavar="CONFIG.toml|config.json|CHECKPOINT_DIR|FILE.gguf", help="what to inspect")
    p.add_argument("--context", default=None, help="context length for the KV-cache figure (default: the model's maximum); "
                   "with --compare-attention a comma-separated list, e.g. 2048,32768")
    p.add_argument("--compare-attention", action="store_true", help="derive MHA, GQA, MQA and MLA variants of the model and "
                   "compare attention parameters, KV-cache bytes and the cache's share of memory at each --context")
    p.add_argument("--matched-budget", action="store_true", help="with --compare-attention: resize each variant's FFN so "
                   "its total parameter count is within 2%% of the base model (default: same head layout)")
    p.add_argument("--dtype", default="bfloat16", help="dtype for byte figures: bfloat16 (default), float16, float32")
    p.add_argument("--json", action="store_true", help="print JSON (keys: parameters, non_embedding_parameters, kv_cache_bytes_per_token, weight_bytes, breakdown, ...)")
    p.set_defaults(run=cmd_inspect)

    p = sub.add_parser(
        "generate",
        help="decode from a checkpoint folder or GGUF (greedy or sampled), streamed, with timings",
        description="Load an HF checkpoint folder (config.json + safetensors) or a GGUF file, decode with the KV "
        "cache (greedy unless a sampling option is given), stream the text as it is decoded, then print prefill "
        "time and decode speed. Stops at the model's end ids. --chat writes one user message out with the "
        "model's chat template (an instruct model answers only in its own layout).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="prompt text (needs tokenizer.json or tokenizer.model in the "
                     "folder); repeat it for a batch of prompts of different lengths, decoded together, each row as "
                     "it would be alone, printed when all are done")
    src.add_argument("--ids", help="prompt as comma-separated token ids, e.g. 1,2,3 (no tokenizer needed)")
    src.add_argument("--chat", metavar="TEXT", help="one turn of a conversation: TEXT as the user's message, written "
                     "out with the model's chat template (prints the reply only; `tinyslm chat` for more turns)")
    p.add_argument("--max-new-tokens", type=int, required=True, help="how many tokens to decode at most")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when the text contains TEXT, cut before it (repeatable; needs --prompt). Decoding also "
                   "stops at every end id the checkpoint declares (config.json and generation_config.json "
                   "eos_token_id, a GGUF's eos and end-of-turn ids)")
    add_chat_options(p, "--chat")
    add_sampling_options(p)
    p.add_argument("--dtype", default=None,
                   help="float32, bfloat16 or float16; default: float32 for a folder, a GGUF's own precision (bfloat16 for a BF16 file, else float32, quantized weights kept quantized)")
    p.add_argument("--allow-pickle", action="store_true", help="allow *.bin pickle weights (read with torch.load(weights_only=True))")
    p.add_argument("--mla-decode", choices=["naive", "absorbed", "auto"], default=None,
                   help="MLA models only: expand K/V from the latent each step (naive) or attend in latent space (absorbed)")
    p.add_argument("--attention", choices=["eager", "sdpa"], default="eager",
                   help="attention backend: eager (written out, transformers' reference path; default) or sdpa "
                   "(torch's fused scaled_dot_product_attention; soft-capped layers stay eager)")
    p.add_argument("--quantize", choices=QUANT_CHOICES, default=None,
                   help="quantize the linear layers after loading: q8_0, q4_0 or q4_1 (llama.cpp's blocks of 32, the "
                   "native kernel: the fast choice on a CPU), or int8 (a scale per row) / int4 (scale and zero per "
                   "group of --group-size inputs) with torch's kernels and bfloat16 activations. Default: keep the "
                   "weights")
    p.add_argument("--group-size", type=int, default=32, help="int4 group size: 32 (default), 64, 128 or 256")
    machine.add_threads_option(p)
    p.add_argument("--fast", choices=["auto", "on", "off"], default="auto",
                   help="the fast decoding path. A model whose weights are GGUF blocks, bfloat16 or float32 (any family but MLA) decodes "
                   "each block in one native call (kernels/decode_block.cpp; nothing to compile) with on and auto alike. "
                   "Other models: a compiled decoding step over a static cache (torch.compile; same tokens; the compile "
                   "is paid once per process, seconds, less with inductor's disk cache warm, shown in the "
                   "summary): on, or auto (default: compiled for --max-new-tokens of 512 or more, plain below). "
                   "off: the plain module path, the reference, for debugging")
    p.set_defaults(run=cmd_generate)

    p = sub.add_parser(
        "parity",
        help="compare a checkpoint folder or a GGUF with transformers, logit for logit",
        description="Load the folder (or GGUF file, dequantized by both) with tinyslm and with transformers "
        "(float32), compare logits on a fixed batch and a greedy continuation, and name the first diverging decoder "
        "layer. Exits 1 on mismatch. Needs transformers (pip install 'tinyslm[test]'; a GGUF needs gguf too).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR|FILE.gguf")
    p.add_argument("--tokens", type=int, default=16, help="greedy tokens to compare (default 16)")
    p.add_argument("--tolerance", type=float, default=1e-5, help="max |logit diff| / max |logit| allowed (default 1e-5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--allow-pickle", action="store_true", help="allow *.bin pickle weights")
    p.set_defaults(run=cmd_parity)

    p = sub.add_parser(
        "bench",
        help="load time, peak memory, prefill and decode speed: tinyslm vs transformers (and llama.cpp on a .gguf)",
        description="Measure tinyslm, transformers (when installed) and, for a .gguf, llama.cpp (when "
        "llama-cpp-python is installed) on the same weights, each in a fresh process: load time, growth of peak "
        "resident memory, prefill time at each --prefill-tokens, greedy decode speed with the KV cache; median and "
        "min..max of --runs runs after a warm-up. Also measures the machine's read bandwidth and reports the "
        "fraction of the bandwidth bound (bandwidth / weight bytes per token) each implementation reaches, and "
        "the speed ratios. Prints measurements; asserts nothing. Example: tinyslm bench model.Q4_0.gguf "
        "--dtype bfloat16; tinyslm bench ~/models/TinyLlama-1.1B --dtype bfloat16 --quantize int4",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR|FILE.gguf")
    p.add_argument("--dtype", default=None,
                   help="float32, bfloat16 or float16; default: float32 for a folder, a GGUF's own precision (bfloat16 for a BF16 file, else float32, quantized weights kept quantized)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length before decoding (default 128)")
    p.add_argument("--new-tokens", type=int, default=32, help="greedy tokens to decode (default 32)")
    p.add_argument("--prefill-tokens", default="128,512", help="comma-separated prompt lengths to time prefill "
                   "at (default 128,512; lengths beyond the model's context are skipped)")
    p.add_argument("--runs", type=int, default=3, help="measured runs after one warm-up (default 3)")
    p.add_argument("--rounds", type=int, default=1, help="repeat the whole comparison this many times, reversing "
                   "the implementations' order every other round, and pool their runs: a machine whose speed "
                   "drifts then weighs on each implementation alike (default 1)")
    p.add_argument("--quantize", choices=QUANT_CHOICES, default=None, help="tinyslm only: quantize the linear "
                   "layers still in float after loading (all of an HF folder's; a GGUF's float head): q8_0, q4_0, "
                   "q4_1 (native kernel), int8, int4 (torch's kernels)")
    p.add_argument("--fast", choices=["auto", "on", "off"], default="auto",
                   help="tinyslm's fast decoding path, as `tinyslm generate --fast`: the native block step where the "
                   "model qualifies, else the compiled step (torch.compile, compiled in the warm-up, its time reported "
                   "apart): on, off (the module path), or auto (default: the native step where it applies, else off in "
                   "a fresh process)")
    p.add_argument("--attention", choices=["eager", "sdpa"], default="sdpa", help="attention of tinyslm and "
                   "transformers alike: sdpa (default, transformers' own default; torch's fused kernel) or eager "
                   "(the written-out reference path)")
    p.add_argument("--no-llama-cpp", action="store_true", help="skip llama.cpp even when it is installed")
    p.add_argument("--no-transformers", action="store_true", help="skip transformers (e.g. when comparing "
                   "tinyslm's precisions on one machine)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every implementation and the "
                   "bandwidth probe (default: torch's default, usually the core count)")
    p.add_argument("--contention", type=int, default=None, metavar="N",
                   help="instead: decode speed quiet and beside N busy processes (one per core is a busy shared "
                   "machine), tinyslm and llama.cpp (a .gguf, when installed) side by side, with the ratios")
    p.add_argument("--sampling", action="store_true",
                   help="instead: tinyslm's decode speed greedy and with each sampler (temperature; top-k, top-p, "
                   "min-p; the reference's multinomial draw), interleaved in one process for --runs rounds, with the "
                   "ratio to greedy")
    p.add_argument("--timeout", type=float, default=600.0, help="with --contention: seconds a loaded run may take "
                   "before it is reported as unfinished (default 600)")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON (one object per implementation)")
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser(
        "demo",
        help="write, load, check and decode small models of real architectures (offline)",
        description="Writes TinyLlama-, Qwen2.5-, Qwen3-, Gemma-2-, Phi-2- and Bloom-shaped checkpoints (real "
        "vocabularies and head layouts, "
        "fewer/narrower layers) with tinyslm's writer, loads them back, checks them against transformers when it "
        "is installed, decodes greedily with the KV cache and prints a table; then trains a ~1M-parameter model "
        "on the embedded corpus for a few hundred steps and shows its greedy text before and after.",
    )
    p.add_argument("--tokens", type=int, default=32, help="greedy tokens to decode per model (default 32)")
    p.add_argument("--no-train", action="store_true", help="skip the short training run on the embedded corpus "
                   "that follows the table")
    machine.add_threads_option(p)
    p.set_defaults(run=cmd_demo)


def cmd_inspect(args) -> int:
    config = load_config(args.target)
    if args.compare_attention:
        contexts = parse_contexts(args.context) if args.context else [2048, 32768]
        mode = "matched_budget" if args.matched_budget else "same_heads"
        result = compare_attention(config, contexts, mode=mode, dtype=args.dtype)
        print(json.dumps(result, indent=2) if args.json else format_compare_attention(result))
        return 0
    try:
        context = None if args.context is None else int(args.context)
    except ValueError:
        raise UsageError(f"--context must be one integer (a list needs --compare-attention), found {args.context!r}") from None
    if context is not None and context <= 0:
        raise UsageError(f"--context must be positive, found {context}")
    stats = model_stats(config, dtype_from_name(args.dtype), context)
    stored = _gguf_bytes(args.target)  # a GGUF's weights as stored (quantized), beside the float figure
    if args.json:
        print(json.dumps(stats.to_dict() | ({"gguf_tensor_bytes": stored} if stored else {}), indent=2))
    else:
        print(format_stats(stats, args.dtype))
        if stored:
            kinds = ", ".join(f"{kind} {n:,} B" for kind, n in stored.items())
            print(f"{'weight bytes as stored':<25} {sum(stored.values()):,} B in the GGUF ({kinds})")
    return 0


def _gguf_bytes(target: str) -> dict[str, int] | None:
    return gguf_tensor_bytes(target) if is_gguf(target) else None


class _Stopped(Exception):
    """A --stop text appeared: decoding ends here."""


def load_for_generation(args):
    """The model as `generate` decodes it (loaded, quantized if asked, its attention backend set) and the seconds
    loading took."""
    t_load = time.perf_counter()
    model = load_pretrained(args.checkpoint, dtype=args.dtype, allow_pickle=args.allow_pickle)
    if args.quantize is not None:
        quantize(model, args.quantize, group_size=args.group_size)
    t_load = time.perf_counter() - t_load
    set_attention_backend(model, args.attention)
    return model, t_load


def generation_end_ids(path, model, tokenizer) -> list[int]:
    """The end ids the checkpoint declares, or (it declares none) the tokenizer's eos."""
    ids = end_ids(path, model.config)
    return ids or ([tokenizer.eos_id] if tokenizer is not None and tokenizer.eos_id is not None else [])


def cmd_generate(args) -> int:
    choice = sampling_options(args)
    sampler = Sampler(**choice)
    if any(stop == "" for stop in args.stop):
        raise UsageError("--stop: an empty stop text would stop before the first token; give some text")
    if args.stop and args.ids is not None:
        raise UsageError("--stop needs --prompt or --chat (text to search; --ids prints ids, not text)")
    for option in ("system", "template"):
        if getattr(args, option) is not None and args.chat is None:
            raise UsageError(f"--{option} goes with --chat (a conversation); --prompt is raw text")
    if args.prompt is not None and len(args.prompt) > 1:
        return generate_batch(args, choice, sampler)
    args.prompt = args.prompt[0] if args.prompt is not None else None
    text = args.prompt if args.prompt is not None else args.chat

    machine.say(machine.busy_note(machine.use_threads(args.threads)))
    tokenizer = None
    if args.ids is not None:
        try:
            ids = [int(x) for x in args.ids.split(",")] if args.ids.strip() else []
        except ValueError:
            raise UsageError(f"--ids must be comma-separated integers, found {args.ids!r}") from None
        too_big = [i for i in ids if abs(i) >= 2**63]  # beyond int64: no vocabulary is that large
        if too_big:
            raise UsageError(f"--ids: token id {too_big[0]} is out of range (no vocabulary has that many tokens)")
    model, t_load = load_for_generation(args)
    if text is not None:
        try:  # (bytes that are not UTF-8 reach Python's argv as lone surrogates: no tokenizer encodes them)
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UsageError(f"--{'prompt' if args.chat is None else 'chat'} is not valid UTF-8 text (at character "
                             f"{exc.start}); check the terminal's or the file's encoding") from None  # fmt: skip
        tokenizer = load_tokenizer(args.checkpoint)
        ids = tokenizer.encode(text) if args.chat is None else chat_prompt(args, tokenizer)
    prompt = check_request(model, torch.tensor([ids], dtype=torch.long), args.max_new_tokens)
    eos = generation_end_ids(args.checkpoint, model, tokenizer) or None

    new: list[int] = []
    times: list[float] = []
    # Decode prompt + continuation together and print what was added: sentencepiece drops the
    # leading space of a sequence's first piece, so decoding the new tokens alone glues words.
    shown = tokenizer.decode(ids) if tokenizer is not None else ""
    if tokenizer is not None and args.chat is None:  # (a chat prints the reply alone, not the template's text)
        print(shown, end="", flush=True)
    ends = set(eos or ())

    def on_token(token) -> None:
        nonlocal shown
        times.append(time.perf_counter())
        new.append(int(token[0]))
        if tokenizer is None:
            print(("" if len(new) == 1 else ",") + str(new[-1]), end="", flush=True)
            return
        if new[-1] >= tokenizer.vocab_size:  # padded embedding rows (Qwen) have no text
            raise TokenizerError(
                f"the model produced id {new[-1]}, beyond the tokenizer's {tokenizer.vocab_size} tokens; use --ids"
            )
        text = tokenizer.decode(ids + [t for t in new if t not in ends])  # (an end token's text is not the reply's)
        if text.endswith("\ufffd"):  # wait for a complete multi-byte character
            return
        found = [i for i in (text.find(stop, start) for stop in args.stop) if i >= 0]
        # print what no stop text can still begin in: hold back the last (longest stop - 1) characters
        end = min(found) if found else max(len(shown), len(text) - max(map(len, args.stop), default=1) + 1)
        print(text[len(shown) : end], end="", flush=True)
        shown, held[0] = text[:end], text
        if found:
            raise _Stopped

    start = len(shown)  # where the continuation begins in the decoded text
    held = [shown]  # the whole text decoded so far (what is printed may stop short of it)

    slow = machine.SlowSteps("token", torch.get_num_threads())

    def timed(token) -> None:
        on_token(token)
        if len(times) > 1 and (note := slow.add(times[-1] - times[-2])):
            print(file=sys.stderr)
            machine.say(note)

    t0 = time.perf_counter()
    with fast_decoding(model, FAST_CHOICES[args.fast]) as decoder:  # its path and compile time: the summary's
        try:
            generate(model, prompt, args.max_new_tokens, eos_token_id=eos, on_token=timed,
                     mla_decode=args.mla_decode, decoder=decoder, **choice)  # fmt: skip
            print(held[0][len(shown) :], end="")  # the held-back tail: no stop text came
        except _Stopped:
            pass
    print()
    if times:
        decode = f"{(len(times) - 1) / (times[-1] - times[0]):.1f} tokens/s" if len(times) > 1 else "n/a (one token)"
        packed = sorted({m.kind if isinstance(m, GGMLLinear) else f"int{m.bits}" for m in model.modules()
                         if isinstance(m, (GGMLLinear, QuantizedLinear))})  # fmt: skip
        dtype = str(model.tok_emb.weight.dtype).removeprefix("torch.")
        weights = f"{'/'.join(packed)} linear weights, {dtype} elsewhere" if packed else dtype
        compiled = "" if decoder.compile_s is None else f" (compile {decoder.compile_s:.1f} s, in the prefill time)"
        print(
            f"[load {t_load:.2f} s | prompt {prompt.shape[1]} tokens, prefill {1000 * (times[0] - t0):.1f} ms | "
            f"{len(times)} new tokens, decode {decode} | {weights}, {args.attention} attention, "
            f"{torch.get_num_threads()} threads, {'sampled' if sampler.samples else 'greedy'}, decoded by the "
            f"{decoder.path}{compiled}]"
        )
    return 0


def generate_batch(args, choice: dict, sampler: Sampler) -> int:
    """`generate --prompt A --prompt B ...` (its options checked by cmd_generate): one padded batch
    (tinyslm.generate's rows of different lengths)."""
    for i, text in enumerate(args.prompt, 1):
        if not text:
            raise UsageError(f"--prompt number {i} is empty: give every prompt some text")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UsageError(f"--prompt number {i} is not valid UTF-8 text (at character {exc.start})") from None
    machine.say(machine.busy_note(machine.use_threads(args.threads)))
    model, t_load = load_for_generation(args)
    tokenizer = load_tokenizer(args.checkpoint)
    prompts = [tokenizer.encode(text) for text in args.prompt]
    eos = generation_end_ids(args.checkpoint, model, tokenizer)
    times: list[float] = []
    t0 = time.perf_counter()
    with fast_decoding(model, FAST_CHOICES[args.fast]) as decoder:
        out = generate(model, prompts, args.max_new_tokens, eos_token_id=eos or None, mla_decode=args.mla_decode,
                       on_token=lambda _: times.append(time.perf_counter()), decoder=decoder, **choice)  # fmt: skip
    width, produced = max(map(len, prompts)), 0
    for i, prompt in enumerate(prompts, 1):
        new = out[i - 1, width:].tolist()
        ends = [k for k, t in enumerate(new) if t in eos]
        new = new[: ends[0]] if ends else new  # (a finished row is filled with its end id)
        produced += len(new) + bool(ends)
        text = tokenizer.decode(prompt + new)
        start = len(tokenizer.decode(prompt))
        cut = min([j for j in (text.find(stop, start) for stop in args.stop) if j >= 0], default=len(text))
        print(f"[{i}] {text[:cut]}")
    if times:
        decode = f"{(len(times) - 1) / (times[-1] - times[0]):.1f} steps/s" if len(times) > 1 else "n/a (one step)"
        print(f"[load {t_load:.2f} s | {len(prompts)} prompts of {min(map(len, prompts))}-{width} tokens, prefill "
              f"{1000 * (times[0] - t0):.1f} ms | {produced} new tokens in {len(times)} steps, decode {decode} | "
              f"{args.attention} attention, {torch.get_num_threads()} threads, "
              f"{'sampled' if sampler.samples else 'greedy'}, decoded by the {decoder.path}]")  # fmt: skip
    return 0


def cmd_parity(args) -> int:

    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise UsageError(f"--tolerance must be a finite number >= 0, found {args.tolerance}")
    report = check_parity(
        args.checkpoint, new_tokens=args.tokens, tolerance=args.tolerance, allow_pickle=args.allow_pickle,
        progress=lambda message: print(f"... {message}", file=sys.stderr, flush=True),
    )  # fmt: skip
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.ok else 1


def cmd_bench(args) -> int:

    if args.dtype is not None:
        dtype_from_name(args.dtype)  # fail fast on a bad dtype
    config = load_config(args.checkpoint)  # fail fast, in this process, on a bad folder or file
    args.dtype = args.dtype or str(default_dtype(args.checkpoint)).removeprefix("torch.")
    if args.prompt_tokens + args.new_tokens > config.max_seq_len:
        raise UsageError(
            f"--prompt-tokens + --new-tokens = {args.prompt_tokens + args.new_tokens} exceeds the model's context "
            f"of {config.max_seq_len}"
        )
    if args.sampling:
        if args.new_tokens < 2 or args.runs < 1:
            raise UsageError("--sampling needs --new-tokens of at least 2 (a speed is a time between tokens) and "
                             "--runs of at least 1")  # fmt: skip
        machine.use_threads(args.threads)
        rows = run_sampling_bench(args.checkpoint, args.dtype, args.prompt_tokens, args.new_tokens, runs=args.runs)
        print(json.dumps(rows, indent=2) if args.json else format_sampling_bench(rows, args.checkpoint, args.new_tokens))
        return 0
    if args.contention is not None:
        rows = run_contention(args.checkpoint, args.contention, args.dtype, args.prompt_tokens, args.new_tokens,
                              runs=args.runs, threads=args.threads, llama_cpp=not args.no_llama_cpp,
                              timeout=args.timeout, rounds=args.rounds)  # fmt: skip
        print(json.dumps(rows, indent=2) if args.json else
              format_contention(rows, args.checkpoint, args.new_tokens, args.prompt_tokens))  # fmt: skip
        return 0
    try:
        sizes = tuple(int(n) for n in args.prefill_tokens.split(","))
    except ValueError:
        raise UsageError(f"--prefill-tokens must be comma-separated integers, found {args.prefill_tokens!r}") from None
    rows = run_bench(args.checkpoint, args.dtype, args.prompt_tokens, args.new_tokens, prefill_tokens=sizes,
                     runs=args.runs, quantize=args.quantize, fast=args.fast, llama_cpp=not args.no_llama_cpp,
                     threads=args.threads, transformers=not args.no_transformers, attention=args.attention,
                     rounds=args.rounds)  # fmt: skip
    print(json.dumps(rows, indent=2) if args.json else
          format_bench(rows, args.checkpoint, args.dtype, args.prompt_tokens, args.new_tokens, args.quantize))  # fmt: skip
    return 0


def cmd_demo(args) -> int:

    threads = machine.use_threads(args.threads)
    print(f"machine: {machine.describe()}, {threads} thread{'s' if threads != 1 else ''}")
    machine.say(machine.busy_note(threads), print)
    t0 = time.perf_counter()
    run_demo(new_tokens=args.tokens, train=not args.no_train)
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return 0
