"""`tinyslm chat MODEL`: an interactive conversation on the terminal (or over stdin, a line per message)."""

from __future__ import annotations

import sys

from .. import machine
from ..errors import GenerationError, TokenizerError, UsageError
from ..files import escape_controls
from ..pretrained import end_ids, load_pretrained
from ..runtime import FAST_CHOICES, fast_decoding
from ..tokenizer import load_chat_template, load_tokenizer
from ..tools.command import add_chat_options, add_sampling_options, sampling_options
from .session import ChatSession

HELP = "/reset forgets the conversation, /system TEXT starts over with a system message, /exit (or Ctrl-D) ends"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "chat",
        help="talk to a chat model (HF folder or GGUF): its chat template, streamed replies, the KV cache kept",
        description="An interactive conversation: each line you type is a user message, written out with the "
        "model's chat template together with the conversation so far; the reply streams as it is decoded and "
        "stops at the model's end ids. The KV cache is kept between turns, so only the new message is computed. "
        f"{HELP}. Reads stdin, so `echo 'Hi' | tinyslm chat MODEL` answers one message.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR|FILE.gguf")
    p.add_argument("--max-new-tokens", type=int, default=512, help="the longest reply, in tokens (default 512)")
    p.add_argument("--context", type=int, default=None, help="positions the conversation may use, prompt and "
                   "replies (default: the model's context, at most 4096); its KV cache is allocated once")
    add_chat_options(p)
    add_sampling_options(p)
    p.add_argument("--dtype", default=None, help="float32, bfloat16 or float16; default: as `tinyslm generate`")
    machine.add_threads_option(p)
    p.add_argument("--fast", choices=["auto", "off"], default="auto", help="auto: the native decoding step where "
                   "the model qualifies (as `tinyslm generate`); off: the module path")
    p.set_defaults(run=cmd_chat)


def _lines():
    """The user's lines from stdin, each decoded on its own (a line that is not UTF-8 is reported, not fatal)."""
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", flush=True)
        raw = sys.stdin.buffer.readline()
        if not raw:
            return
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            print(f"[that line is not UTF-8 text (byte {exc.start}); type it again]", file=sys.stderr)


def cmd_chat(args) -> int:
    choice = sampling_options(args)
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, found {args.max_new_tokens}")
    if args.context is not None and args.context < 2:
        raise UsageError(f"--context must be at least 2 positions, found {args.context}")
    machine.use_threads(args.threads)
    template = load_chat_template(args.checkpoint, args.template)  # first: no template, no need to load weights
    model = load_pretrained(args.checkpoint, dtype=args.dtype)
    tokenizer = load_tokenizer(args.checkpoint)
    context = args.context or min(model.config.max_seq_len, 4096)
    if context > model.config.max_seq_len:
        raise UsageError(f"--context {context} exceeds the model's context of {model.config.max_seq_len} positions")
    template.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)  # a broken template: now
    with fast_decoding(model, FAST_CHOICES[args.fast]) as decoder:
        session = ChatSession(model, tokenizer, template, end_ids(args.checkpoint, model.config), context=context,
                              system=args.system, decoder=decoder, **choice)  # fmt: skip
        if sys.stdin.isatty():
            print(f"[{escape_controls(str(args.checkpoint))}: {context} positions of context. {HELP}]", file=sys.stderr)
        for line in _lines():
            if line.strip() in ("/exit", "/quit"):
                break
            if line.strip() == "/reset":
                session.reset()
                print("[conversation forgotten]", file=sys.stderr)
                continue
            if line.startswith("/system"):
                session.reset(system=line[len("/system") :].strip())
                print(f"[new conversation, system message: {session.system or 'none'}]", file=sys.stderr)
                continue
            if line.startswith("/"):
                print(f"[unknown command {line.split()[0]!r}: {HELP}]", file=sys.stderr)
                continue
            if not line.strip():
                continue
            try:
                session.say(line, args.max_new_tokens, on_text=lambda text: print(text, end="", flush=True))
            except (GenerationError, TokenizerError) as exc:  # a turn too long, a template refusing it: say, go on
                print(f"\n[{exc}]", file=sys.stderr)
                continue
            except KeyboardInterrupt:
                print("\n[interrupted: the reply is dropped]", file=sys.stderr)
                continue
            print()
            if session.near_full():
                print(f"[context: {session.used} of {session.context} positions used; /reset to start over]",
                      file=sys.stderr)  # fmt: skip
    return 0

