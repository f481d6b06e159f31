"""Command line of the capture tool: `python3 traces/capture/capture.py --help`."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

from . import rules
from .capture import Capture, CaptureOptions, check_output, output_paths
from .rules import CaptureError

PROG = "capture.py"

# Limits of the trace format (traces/README.md, "Data model"), checked before the capture runs.
U32_MAX = 2**32 - 1  # header fields: budget, page, partition, sink and local-window tokens
U64_MAX = 2**64 - 1  # the header's seed
MAX_ARRIVAL_US = 10**15  # a request's arrival_us
MAX_IDS = 65535  # layers or KV heads a trace holds

DESCRIPTION = """\
Captures an attention-access trace from a real model: hooks the attention of a Hugging Face
(Llama/Qwen-style) model or of a plain PyTorch model, prefills each prompt, decodes up to
--max-steps tokens, and at every decode step applies each algorithm's selection rule to the real
queries and keys of every recorded layer and KV head. Writes the JSON Lines import format of
traces/README.md; `spin trace import OUT.jsonl --out OUT.spt` (or --spt here) converts it.
One request per (prompt, algorithm). Rules, GQA reduction and static region: docs/trace-capture.md.
"""

EPILOG = """\
algorithms (defaults as the trace generators):
  quest     16-token pages, score sum_d max(q*min_k, q*max_k), budget 2048 tokens, local 16
  shadowkv  8-token partitions = pages, score q . mean key, budget 1.56%%, sinks 16, local 64
  token     single tokens over 16-token pages, score q . k, budget 2048 tokens

examples:
  %(prog)s --tiny-llama --random-prompts 2 --prompt-tokens 512 --algorithm quest,token \\
      --budget 64 --max-steps 32 --out t.jsonl --spt t.spt
  %(prog)s --hf-model /ckpt/Qwen3-8B --dataset data.jsonl --field prompt --limit 8 \\
      --max-prompt-tokens 32768 --algorithm shadowkv --max-steps 256 --out t.jsonl
  %(prog)s --hf-config '{"model_type":"llama","hidden_size":256,"num_hidden_layers":4,
      "num_attention_heads":8,"num_key_value_heads":2,"intermediate_size":512,
      "vocab_size":1024}' --random-prompts 2 --prompt-tokens 2048 --out t.jsonl
"""


def parse_id_list(text: str, option: str) -> list[int]:
    """'0,2,4-7' -> [0, 2, 4, 5, 6, 7]."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                if hi - lo >= MAX_IDS:
                    raise CaptureError(f"{option}: the range '{part}' holds {hi - lo + 1} ids; a "
                                       f"trace holds at most {MAX_IDS} layers or KV heads")
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise CaptureError(f"{option}: '{part}' in '{text}' is not an id or a range "
                               "(expected e.g. 0,2,4-7)") from None
    return out


def parse_budget(text: str, option: str = "--budget") -> dict:
    """'2048' -> tokens; '0.0156' or '1.56%' -> ratio of the context."""
    t = text.strip()
    try:
        if t.endswith("%"):
            ratio = float(t[:-1]) / 100.0
        elif t.isdigit():
            tokens = int(t)
            if not 1 <= tokens <= U32_MAX:
                raise ValueError
            return {"budget_tokens": tokens, "budget_ratio": 0.0}
        else:
            ratio = float(t)
        if not 0.0 < ratio <= 1.0:
            raise ValueError
    except ValueError:
        raise CaptureError(f"{option}: '{text}' is not a budget: expected a token count (an "
                           f"integer in [1, {U32_MAX}], e.g. 2048) or a ratio of the context in "
                           "(0, 1] (e.g. 0.0156 or 1.56%)") from None
    return {"budget_tokens": 0, "budget_ratio": ratio}


def per_algorithm(values: list[str] | None, option: str, names: list[str], convert) -> dict:
    """[ 'V', 'ALGO=V', ... ] -> {algo: converted}; a bare V applies to every algorithm."""
    out: dict = {}
    for v in values or []:
        if "=" in v:
            name, value = v.split("=", 1)
            if name not in names:
                raise CaptureError(f"{option}: '{v}' names algorithm '{name}', which is not among "
                                   f"--algorithm ({', '.join(names)})")
            targets = [name]
        else:
            targets, value = names, v
        converted = convert(value, option)
        for name in targets:
            out.setdefault(name, {}).update(converted)
    return out


def non_negative(field_name: str, power_of_two: bool = False, minimum: int = 0):
    def convert(value: str, option: str) -> dict:
        try:
            n = int(value)
            if not minimum <= n <= U32_MAX or (power_of_two and (n & (n - 1)) != 0):
                raise ValueError
        except ValueError:
            want = "a power of two" if power_of_two else "an integer"
            raise CaptureError(f"{option}: '{value}' is not {want} in [{minimum}, "
                               f"{U32_MAX}]") from None
        return {field_name: n}

    return convert


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model (exactly one)")
    m.add_argument("--hf-model", metavar="PATH",
                   help="a transformers checkpoint: a local directory (or a hub id where the hub "
                        "is reachable); loaded with AutoModelForCausalLM")
    m.add_argument("--hf-config", metavar="JSON|PATH",
                   help="a transformers model with random weights (seeded by --seed) built from "
                        "a config: a JSON object with model_type, or a config.json / checkpoint "
                        "directory; no weights are read")
    m.add_argument("--tiny-llama", action="store_true",
                   help="the built-in plain-PyTorch Llama-style example model "
                        "(spin_capture/tiny_llama.py), random weights from --seed")
    m.add_argument("--tiny-config", metavar="JSON",
                   help="--tiny-llama: sizes overriding TinyLlamaConfig, e.g. "
                        "'{\"num_hidden_layers\":4,\"head_dim\":32}'")
    m.add_argument("--tokenizer", metavar="PATH",
                   help="tokenizer for text prompts (default: --hf-model's; not with "
                        "--tiny-llama, which has none)")
    m.add_argument("--device", default=None,
                   help="torch device (default: cuda if available, else cpu)")
    m.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="the dtype the model computes in (auto: the checkpoint's for --hf-model, "
                        "float32 otherwise); the trace's element size is --dtype-bytes")

    d = p.add_argument_group("prompts (at least one source; all are used, in this order)")
    d.add_argument("--prompt", action="append", metavar="TEXT", help="a text prompt (repeatable)")
    d.add_argument("--prompt-file", action="append", metavar="FILE",
                   help="a file whose whole text is one prompt (repeatable)")
    d.add_argument("--dataset", metavar="FILE.jsonl",
                   help="JSON Lines, one record per prompt; --field names the prompt (a string "
                        "is tokenized, a list of integers is taken as token ids)")
    d.add_argument("--field", default="prompt", help="--dataset: the field (default: prompt)")
    d.add_argument("--limit", type=int, metavar="N", help="--dataset: only the first N records")
    d.add_argument("--random-prompts", type=int, metavar="N", default=0,
                   help="N prompts of random token ids (seeded by --seed), for random-weight "
                        "models without a tokenizer")
    d.add_argument("--prompt-tokens", metavar="L|LO-HI", default="512",
                   help="--random-prompts: length, fixed or uniform in [LO, HI] (default 512)")
    d.add_argument("--max-prompt-tokens", type=int, metavar="N",
                   help="cut longer prompts to N tokens, keeping the first N/2 and last N - N/2 "
                        "(LongBench's middle truncation)")
    d.add_argument("--chat-template", action="store_true",
                   help="text prompts become one user message of the tokenizer's chat template, "
                        "with the generation prompt added")

    s = p.add_argument_group("selection (ALGO=V forms apply to one algorithm; a bare V to all)")
    s.add_argument("--algorithm", default="quest", metavar="LIST",
                   help=f"comma list of {', '.join(rules.DEFAULTS)} (default quest); each prompt "
                        "gives one request per algorithm, from the same decode")
    s.add_argument("--budget", action="append", metavar="[ALGO=]V",
                   help="retrieval budget: a token count (2048) or a ratio of the context "
                        "(0.0156 or 1.56%%); replaces the algorithm's default")
    s.add_argument("--page-tokens", action="append", metavar="[ALGO=]N",
                   help="page size in tokens, a power of two")
    s.add_argument("--partition-tokens", action="append", metavar="[ALGO=]N",
                   help="partition size g (quest: the page it bounds, >= 2; token: must be 1)")
    s.add_argument("--sink-tokens", action="append", metavar="[ALGO=]N",
                   help="attention sinks of the static region (never selected)")
    s.add_argument("--local-window-tokens", action="append", metavar="[ALGO=]N",
                   help="local window of the static region (never selected)")
    s.add_argument("--gqa-reduce", choices=rules.GQA_REDUCTIONS, default="sum",
                   help="how the query heads of a KV head's group are combined into one score "
                        "per partition (default sum)")
    s.add_argument("--layers", metavar="LIST",
                   help="model layers to record, e.g. 0,2,4-7 (default all); trace layer i is "
                        "the i-th listed")
    s.add_argument("--kv-heads", metavar="LIST",
                   help="KV heads to record, e.g. 0-3 (default all); trace head i is the i-th")
    s.add_argument("--max-steps", type=int, default=64, metavar="N",
                   help="decode steps recorded per prompt (default 64)")

    g = p.add_argument_group("decoding")
    g.add_argument("--decode", choices=["greedy", "sample"], default="greedy",
                   help="next token: argmax (default) or sampled")
    g.add_argument("--temperature", type=float, default=1.0, help="--decode sample: temperature")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of random weights, random prompts and sampling, in [0, 2^64) "
                        "(default 0)")
    g.add_argument("--stop-at-eos", action="store_true",
                   help="end a request before a step whose input is an end-of-sequence token "
                        "(default: always --max-steps steps)")

    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="FILE.jsonl",
                   help="the JSON Lines trace; a name containing {algorithm} gives one trace "
                        "per algorithm (e.g. t-{algorithm}.jsonl)")
    o.add_argument("--model-name", help="the header's model name (default: from the model)")
    o.add_argument("--dtype-bytes", type=int, choices=(1, 2), default=2, metavar="B",
                   help="the header's bytes per K or V element of the served KV cache, whatever "
                        "--dtype the capture computes in: 2 (bf16/fp16, default) or 1 (fp8), as "
                        "spin's model.dtype")
    o.add_argument("--arrival-interval-us", type=int, default=0, metavar="US",
                   help="prompt i's requests arrive at i * US microseconds, at most 10^15 "
                        "(default 0)")
    o.add_argument("--spt", metavar="FILE.spt",
                   help="also run `spin trace import` to write this binary trace ({algorithm} "
                        "as in --out: in both or in neither)")
    o.add_argument("--spin", metavar="PATH",
                   help="the spin binary for --spt (default: build/spin of this checkout, "
                        "else spin on PATH)")
    o.add_argument("--quiet", action="store_true", help="no progress on standard error")
    return p


def resolve_dtype(name: str):
    import torch  # noqa: PLC0415
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def import_transformers(option: str):
    try:
        import transformers  # noqa: PLC0415 (lazy: the tool runs without it)
    except ImportError:
        raise CaptureError(
            f"{option} needs the transformers package, which this Python cannot import; "
            "--tiny-llama and the Python API (your own PyTorch modules) work without it") from None
    return transformers


def load_model(args, device):
    """-> (model, tokenizer or None, model name, eos ids, vocab size, source text)."""
    import torch  # noqa: PLC0415
    chosen = [o for o, v in (("--hf-model", args.hf_model), ("--hf-config", args.hf_config),
                             ("--tiny-llama", args.tiny_llama)) if v]
    if len(chosen) != 1:
        raise CaptureError("give exactly one model: --hf-model PATH, --hf-config JSON|PATH or "
                           f"--tiny-llama (got {', '.join(chosen) if chosen else 'none'})")
    if args.tiny_config and not args.tiny_llama:
        raise CaptureError("--tiny-config applies to --tiny-llama only")
    if args.tokenizer and args.tiny_llama:
        raise CaptureError("--tokenizer applies to --hf-model and --hf-config only: --tiny-llama "
                           "has no tokenizer (give token-id prompts or --random-prompts)")
    if args.tiny_llama:
        from . import tiny_llama  # noqa: PLC0415
        overrides = {}
        if args.tiny_config:
            try:
                overrides = json.loads(args.tiny_config)
                config = tiny_llama.TinyLlamaConfig(**overrides).validate()
            except (ValueError, TypeError) as e:
                raise CaptureError(f"--tiny-config: {e}") from None
        else:
            config = tiny_llama.TinyLlamaConfig()
        model = tiny_llama.build(config, seed=args.seed)
        if args.dtype not in ("auto", "float32"):
            model = model.to(resolve_dtype(args.dtype))
        eos = (config.eos_token_id,) if config.eos_token_id >= 0 else ()
        return (model.to(device), None, "tiny-llama", eos, config.vocab_size,
                f"tiny-llama {json.dumps(config.to_dict(), separators=(',', ':'))} seed {args.seed}")

    transformers = import_transformers(chosen[0])
    major = int(transformers.__version__.split(".")[0])
    dtype_key = "dtype" if major >= 5 else "torch_dtype"
    if args.hf_model:
        dtype = "auto" if args.dtype == "auto" else resolve_dtype(args.dtype)
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(args.hf_model,
                                                                      **{dtype_key: dtype})
        except (OSError, ValueError) as e:
            raise CaptureError(f"--hf-model {args.hf_model}: cannot load: {e}") from None
        name = os.path.basename(os.path.normpath(args.hf_model))
        source = f"transformers {transformers.__version__} checkpoint {args.hf_model}"
    else:
        text = args.hf_config
        try:
            if os.path.exists(text):
                config = transformers.AutoConfig.from_pretrained(text)
            else:
                fields = json.loads(text)
                if not isinstance(fields, dict) or "model_type" not in fields:
                    raise ValueError("expected a JSON object with a model_type")
                config = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
        except (OSError, ValueError, KeyError) as e:
            raise CaptureError(f"--hf-config: not a config file, checkpoint directory or JSON "
                               f"config with model_type: {e}") from None
        torch.manual_seed(args.seed)
        model = transformers.AutoModelForCausalLM.from_config(config)
        model = model.to(torch.float32 if args.dtype == "auto" else resolve_dtype(args.dtype))
        name = f"random-{config.model_type}"
        source = (f"transformers {transformers.__version__} random-weight {config.model_type} "
                  f"from config {json.dumps(config.to_diff_dict(), separators=(',', ':'))}, "
                  f"seed {args.seed}")
    model = model.to(device).eval()
    tokenizer = None
    tok_path = args.tokenizer or args.hf_model
    if tok_path:
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(tok_path)
        except (OSError, ValueError) as e:
            if args.tokenizer or args.prompt or args.prompt_file or args.dataset:
                raise CaptureError(f"cannot load a tokenizer from {tok_path}: {e}") from None
    eos = getattr(model.generation_config, "eos_token_id", None) if hasattr(
        model, "generation_config") else None
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    eos = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
    vocab = model.get_input_embeddings().num_embeddings
    return model, tokenizer, name, eos, vocab, source


def tokenize(text: str, tokenizer, chat: bool, where: str) -> list[int]:
    if tokenizer is None:
        raise CaptureError(f"{where} is text, which needs a tokenizer: give --tokenizer PATH (or "
                           "use --hf-model with a tokenizer, token-id prompts, or --random-prompts)")
    if chat:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                            add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(text)["input_ids"])


def prompt_ids(value, tokenizer, chat: bool, vocab: int, where: str) -> list[int]:
    """A prompt's token ids: text is tokenized, a list taken as ids; every id must be in the
    model's vocabulary."""
    if isinstance(value, str):
        value = tokenize(value, tokenizer, chat, where)
    if not isinstance(value, list):
        raise CaptureError(f"{where} must be a string or a list of token ids, got a "
                           f"{type(value).__name__}")
    if not value:
        raise CaptureError(f"{where} has no tokens")
    for i, t in enumerate(value):
        if type(t) is not int or not 0 <= t < vocab:
            raise CaptureError(f"{where}: token {i} is {json.dumps(t, default=repr)}, not a token "
                               f"id in [0, {vocab}) (the model's vocabulary)")
    return value


def utf8(data: bytes, path: str, line: int = 1) -> str:
    """`data`, read from `path` from line `line` on, as text."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line += data.count(b"\n", 0, e.start)
        raise CaptureError(f"{path}:{line}: not UTF-8 (byte {data[e.start]:#04x})") from None


def load_prompts(args, tokenizer, vocab: int) -> list[list[int]]:
    prompts: list[list[int]] = []
    for i, text in enumerate(args.prompt or []):
        prompts.append(prompt_ids(text, tokenizer, args.chat_template, vocab, f"--prompt #{i + 1}"))
    for path in args.prompt_file or []:
        try:
            with open(path, "rb") as f:
                text = utf8(f.read(), path)
        except OSError as e:
            raise CaptureError(f"--prompt-file {path}: {e.strerror}") from None
        prompts.append(prompt_ids(text, tokenizer, args.chat_template, vocab,
                                  f"--prompt-file {path}"))
    if args.limit is not None and args.limit < 1:
        raise CaptureError(f"--limit: expected >= 1, got {args.limit}")
    if args.dataset:
        try:
            f = open(args.dataset, "rb")
        except OSError as e:
            raise CaptureError(f"--dataset {args.dataset}: {e.strerror}") from None
        with f:
            count = 0
            for n, raw in enumerate(f, 1):
                line = utf8(raw, args.dataset, n)
                if not line.strip():
                    continue
                if args.limit is not None and count >= args.limit:
                    break
                where = f"{args.dataset}:{n}"
                try:
                    record = json.loads(line)
                except ValueError as e:
                    raise CaptureError(f"{where}: not a JSON object: {e}") from None
                if not isinstance(record, dict) or args.field not in record:
                    raise CaptureError(f"{where}: no field '{args.field}' (--field)")
                prompts.append(prompt_ids(record[args.field], tokenizer, args.chat_template, vocab,
                                          f"{where}: field '{args.field}'"))
                count += 1
    if args.random_prompts < 0:
        raise CaptureError(f"--random-prompts: expected >= 0, got {args.random_prompts}")
    if args.random_prompts:
        try:
            if "-" in args.prompt_tokens:
                lo, hi = (int(x) for x in args.prompt_tokens.split("-", 1))
            else:
                lo = hi = int(args.prompt_tokens)
            if not 1 <= lo <= hi:
                raise ValueError
        except ValueError:
            raise CaptureError(f"--prompt-tokens: '{args.prompt_tokens}' is not a length or a "
                               "range LO-HI with 1 <= LO <= HI") from None
        rng = random.Random(args.seed)
        for _ in range(args.random_prompts):
            length = rng.randint(lo, hi)
            prompts.append([rng.randrange(vocab) for _ in range(length)])
    if not prompts:
        raise CaptureError("no prompt: give --prompt, --prompt-file, --dataset or "
                           "--random-prompts")
    if args.max_prompt_tokens is not None:
        n = args.max_prompt_tokens
        if n < 1:
            raise CaptureError(f"--max-prompt-tokens: expected >= 1, got {n}")
        prompts = [p if len(p) <= n else p[:n // 2] + p[len(p) - (n - n // 2):] for p in prompts]
    return prompts


def algorithms_from(args) -> list:
    names = [n.strip() for n in args.algorithm.split(",") if n.strip()]
    if not names:
        raise CaptureError("--algorithm: the list is empty")
    for n in names:
        if n not in rules.DEFAULTS:
            raise CaptureError(f"--algorithm: unknown algorithm '{n}'; known: "
                               f"{', '.join(rules.DEFAULTS)}")
    overrides: dict = {n: {} for n in names}
    for option, values, convert in (
            ("--budget", args.budget, lambda v, o: parse_budget(v, o)),
            ("--page-tokens", args.page_tokens, non_negative("page_tokens", True, 1)),
            ("--partition-tokens", args.partition_tokens, non_negative("partition_tokens", False, 1)),
            ("--sink-tokens", args.sink_tokens, non_negative("sink_tokens")),
            ("--local-window-tokens", args.local_window_tokens,
             non_negative("local_window_tokens"))):
        for name, fields in per_algorithm(values, option, names, convert).items():
            overrides[name].update(fields)
    return [rules.algorithm(n, **overrides[n]) for n in names]


def default_spin() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    candidate = os.path.normpath(os.path.join(here, "..", "..", "..", "build", "spin"))
    if os.access(candidate, os.X_OK):
        return candidate
    return shutil.which("spin")


def resolve_device(name: str | None):
    import torch  # noqa: PLC0415
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        torch.zeros(1, device=device)
    except (RuntimeError, AssertionError) as e:  # AssertionError: torch without CUDA
        raise CaptureError(f"--device {name}: not a device this torch can use: {e}") from None
    return device


def check_trace_limits(args, prompts: list[list[int]]) -> None:
    """The import format's limits that depend on the prompts (traces/README.md)."""
    last = (len(prompts) - 1) * args.arrival_interval_us
    if last > MAX_ARRIVAL_US:
        raise CaptureError(f"--arrival-interval-us {args.arrival_interval_us}: prompt "
                           f"{len(prompts)} would arrive at {last} us, after the trace format's "
                           f"limit of {MAX_ARRIVAL_US} us")
    longest = max(len(p) for p in prompts)
    if longest + args.max_steps >= U32_MAX:
        raise CaptureError(f"--max-steps {args.max_steps}: with a prompt of {longest} tokens a "
                           f"request would reach {longest + args.max_steps} tokens; the trace "
                           f"format allows fewer than {U32_MAX}")


def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch  # noqa: PLC0415

    algorithms = algorithms_from(args)
    names = [a.name for a in algorithms]
    for option, value, lo, hi in (("--max-steps", args.max_steps, 1, U32_MAX),
                                  ("--seed", args.seed, 0, U64_MAX),
                                  ("--arrival-interval-us", args.arrival_interval_us, 0,
                                   MAX_ARRIVAL_US)):
        if not lo <= value <= hi:
            raise CaptureError(f"{option}: expected an integer in [{lo}, {hi}], got {value}")
    layers = parse_id_list(args.layers, "--layers") if args.layers else None
    heads = parse_id_list(args.kv_heads, "--kv-heads") if args.kv_heads else None
    if args.spt and ("{algorithm}" in args.out) != ("{algorithm}" in args.spt):
        raise CaptureError("--out and --spt: give {algorithm} in both (one trace per algorithm) "
                           "or in neither")
    for option, pattern in (("--out", args.out), ("--spt", args.spt)):
        for path in output_paths(pattern, names) if pattern else []:
            check_output(path, f"{option} {path}")
    spin = None
    if args.spt:
        spin = args.spin or default_spin()
        if not spin or not os.access(spin, os.X_OK):
            raise CaptureError("--spt needs the spin binary: give --spin PATH (e.g. build/spin)")
    device = resolve_device(args.device)

    model, tokenizer, name, eos, vocab, source = load_model(args, device)
    try:  # one token through the model: a dtype the device cannot compute in fails here
        with torch.no_grad():
            model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device))
    except RuntimeError as e:
        raise CaptureError(f"--dtype {args.dtype} on --device {device}: the model cannot run: "
                           f"{e}") from None
    prompts = load_prompts(args, tokenizer, vocab)
    check_trace_limits(args, prompts)
    options = CaptureOptions(
        algorithms=algorithms, max_steps=args.max_steps, layers=layers, kv_heads=heads,
        gqa_reduce=args.gqa_reduce, decode=args.decode, temperature=args.temperature,
        seed=args.seed, stop_at_eos=args.stop_at_eos, eos_token_ids=eos,
        model_name=args.model_name or name, dtype_bytes=args.dtype_bytes,
        arrival_interval_us=args.arrival_interval_us, source=source, header_seed=args.seed)
    started = time.time()

    def progress(prompt, step):
        if not args.quiet and (step + 1 == args.max_steps or (step + 1) % 64 == 0):
            print(f"capture: prompt {prompt + 1}/{len(prompts)} ({len(prompts[prompt])} tokens): "
                  f"step {step + 1}", file=sys.stderr)

    summary = Capture(model, options).run(prompts, args.out, progress=progress)
    summary["seconds"] = round(time.time() - started, 2)
    summary["device"] = str(device)
    print(json.dumps(summary))
    if args.spt:
        for src, dst in zip(output_paths(args.out, names), output_paths(args.spt, names)):
            status = import_trace(spin, src, dst)
            if status != 0:
                raise CaptureError(f"`{spin} trace import {src} --out {dst}` failed with exit "
                                   f"status {status}")
    return 0


def import_trace(spin: str, src: str, dst: str) -> int:
    """Runs `spin trace import SRC --out DST` and returns its exit status. Interrupted (Ctrl-C,
    SIGTERM, SIGHUP), it stops the import with SIGTERM, which spin answers by removing its
    DST.partial (a SIGKILL, subprocess.run's way, would leave it), then goes on stopping."""
    child = subprocess.Popen([spin, "trace", "import", src, "--out", dst])
    try:
        return child.wait()
    except BaseException:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def exit_on_signal(signum, frame):
    """SIGTERM or SIGHUP: exits as Ctrl-C does, through the with/finally blocks that remove the
    capture's temporary and partial files."""
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    # Only where the signal has its default action (one ignored, as under nohup, stays ignored).
    previous = {signum: signal.signal(signum, exit_on_signal)
                for signum in (signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(signum) == signal.SIG_DFL}
    try:
        return run(argv)
    except CaptureError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
