"""The capture driver: prefill and decode real prompts, apply the rules at every decode step,
write the JSON Lines import format of traces/README.md ("Interchange: JSON Lines").

    from spin_capture import Capture, CaptureOptions, rules
    options = CaptureOptions(algorithms=[rules.algorithm("quest", budget_tokens=256)],
                             max_steps=128)
    summary = Capture(model, options).run([prompt_ids, ...], "trace.jsonl")

Each (prompt, algorithm) pair becomes one request of the trace (id = prompt index * number of
algorithms + algorithm index); all algorithms of a prompt see the same decode (one forward pass
per step, the model's own full attention: the trace is the selection each rule would make along
the dense-attention trajectory). Requests are decoded one at a time (batch 1, no padding).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field

import torch

from . import hooks, rules
from .rules import AlgorithmSpec, CaptureError


@dataclass
class CaptureOptions:
    algorithms: list[AlgorithmSpec]
    max_steps: int = 64  # decode steps recorded per prompt
    layers: list[int] | None = None  # model layers to record (None: all), in trace order
    kv_heads: list[int] | None = None  # KV heads to record (None: all), in trace order
    gqa_reduce: str = "sum"  # sum | max over the query heads of a KV head's group
    decode: str = "greedy"  # greedy | sample
    temperature: float = 1.0  # sample: softmax temperature
    seed: int = 0  # sample: the sampling generator's seed
    stop_at_eos: bool = False
    eos_token_ids: tuple[int, ...] = ()
    model_name: str = "model"
    dtype_bytes: int = 2  # of a K or V element in the served KV cache: 2 (bf16/fp16) or 1 (fp8)
    arrival_interval_us: int = 0  # prompt i arrives at i * this
    source: str = ""  # extra free text for the header's source field
    header_seed: int = 0  # the header's seed field
    extra: dict = field(default_factory=dict)

    def validate(self) -> "CaptureOptions":
        if not self.algorithms:
            raise CaptureError("no algorithm given")
        names = [a.name for a in self.algorithms]
        if len(set(names)) != len(names):
            raise CaptureError(f"an algorithm is listed twice: {', '.join(names)}")
        for a in self.algorithms:
            a.validate()
        if self.max_steps < 1:
            raise CaptureError(f"max steps must be >= 1, got {self.max_steps}")
        if self.gqa_reduce not in rules.GQA_REDUCTIONS:
            raise CaptureError(f"unknown GQA reduction '{self.gqa_reduce}'; known: "
                               f"{', '.join(rules.GQA_REDUCTIONS)}")
        if self.decode not in ("greedy", "sample"):
            raise CaptureError(f"unknown decode mode '{self.decode}'; known: greedy, sample")
        if self.decode == "sample" and not self.temperature > 0:
            raise CaptureError(f"the sampling temperature must be > 0, got {self.temperature}")
        if self.dtype_bytes not in (1, 2):
            raise CaptureError(f"dtype bytes must be 2 (a bf16/fp16 KV cache) or 1 (fp8), the "
                               f"element size spin's model.dtype allows, got {self.dtype_bytes}")
        for what, values in (("layer", self.layers), ("KV head", self.kv_heads)):
            if values is not None:
                if not values:
                    raise CaptureError(f"the list of {what}s is empty")
                twice = [x for x, n in Counter(values).items() if n > 1]
                if twice:
                    raise CaptureError(f"{what} {twice[0]} is listed twice")
                if min(values) < 0:
                    raise CaptureError(f"{what} ids must be >= 0, got {min(values)}")
        return self


def id_text(ids: list[int]) -> str:
    """A list of ids for a message: short lists whole, long ones by their ends and count."""
    if len(ids) <= 8:
        return str(ids)
    return f"[{ids[0]}, {ids[1]}, ..., {ids[-1]}] ({len(ids)} ids)"


def output_paths(out_path: str, names: list[str]) -> list[str]:
    """The files an output path names: one per algorithm where it contains '{algorithm}'."""
    if "{algorithm}" not in out_path:
        return [out_path]
    return [out_path.replace("{algorithm}", name) for name in names]


def output_target(path: str) -> tuple[str, bool]:
    """(the file to write, whether to write it in place), as spin's writer does (traces/README.md,
    "Interchange"): a symbolic link's target is written and the link stays; a path that exists and
    is neither a regular file nor a directory (a FIFO, a device) is written in place; any other
    through PATH.partial, renamed once complete."""
    try:
        target = os.path.realpath(path, strict=os.path.exists(path))
    except OSError:  # e.g. /dev/stdout on a pipe: /proc/self/fd/1 links to no path
        target = path
    in_place = os.path.exists(target) and not os.path.isfile(target) and not os.path.isdir(target)
    return target, in_place


def check_output(path: str, name: str) -> None:
    """Fails now, rather than after the capture, where `path` cannot be written; `name` starts
    the message."""
    target, in_place = output_target(path)
    if os.path.isdir(target):
        raise CaptureError(f"{name}: {target} is a directory, expected a file")
    if in_place:
        if not os.access(target, os.W_OK):
            raise CaptureError(f"{name}: {target} is not writable")
        return
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise CaptureError(f"{name}: the directory {folder} does not exist")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise CaptureError(f"{name}: cannot create a file in {folder}: {e.strerror}") from None


@dataclass
class Geometry:
    layers: list[int]  # every layer whose attention ran, ascending
    query_heads: int
    kv_heads: int
    head_dim: int


class _StepLines:
    """A prompt's step lines for one algorithm, in the temporary folder: a write or close that
    fails (a full disk) is a CaptureError naming the folder; other errors keep their own."""

    def __init__(self, path, prompt, folder):
        self.name = path
        self._where = f"the step lines of prompt {prompt} under {folder}"
        self._file = self._do(lambda: open(path, "w"))

    def _do(self, action):
        try:
            return action()
        except OSError as e:
            raise CaptureError(f"cannot write {self._where}: {e.strerror or e}") from None

    def write(self, text):
        self._do(lambda: self._file.write(text))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._do(self._file.close)
        return False


class Capture:
    def __init__(self, model: torch.nn.Module, options: CaptureOptions):
        self.model = model
        self.options = options.validate()
        self.geometry: Geometry | None = None
        self.recorder = hooks.AttentionRecorder(self._on_attention)
        self._phase = "idle"
        self._prefill_seen: dict[int, tuple] = {}
        self._pending: dict[int, list] = {}
        self._layers: list[int] = []
        self._heads: list[int] = []
        self._wanted: set[int] = set()
        self._context = 0
        self._step = 0

    # -- the hook's consumer --------------------------------------------------------------
    def _on_attention(self, layer: int, query: torch.Tensor, key: torch.Tensor) -> None:
        if self._phase == "idle":
            return
        if query.dim() != 4 or key.dim() != 4:
            raise CaptureError(f"layer {layer}: expected 4-d query and key [batch, heads, tokens, "
                               f"dim], got {tuple(query.shape)} and {tuple(key.shape)}")
        if query.shape[0] != 1 or key.shape[0] != 1:
            raise CaptureError(f"layer {layer}: the capture decodes batch 1, got a batch of "
                               f"{query.shape[0]}")
        if self._phase == "prefill":
            if layer in self._prefill_seen:
                raise CaptureError(f"layer {layer}'s attention ran twice in one forward pass")
            self._prefill_seen[layer] = (query.shape[1], key.shape[1], query.shape[3],
                                         query.shape[2], key.shape[2])
            return
        if layer not in self._wanted:
            return
        if layer in self._pending:
            raise CaptureError(f"layer {layer}'s attention ran twice in decode step {self._step}")
        g = self.geometry
        if tuple(query.shape) != (1, g.query_heads, 1, g.head_dim):
            raise CaptureError(
                f"layer {layer}, decode step {self._step}: query shape {tuple(query.shape)}, "
                f"expected (1, {g.query_heads}, 1, {g.head_dim})")
        if key.shape[1] != g.kv_heads or key.shape[2] != self._context + 1:
            raise CaptureError(
                f"layer {layer}, decode step {self._step}: the attention saw keys of shape "
                f"{tuple(key.shape)}, expected {self._context + 1} tokens (the context of "
                f"{self._context} and this step's token) of {g.kv_heads} KV heads: the capture "
                "needs the layer's whole KV cache (no sliding window or compressed cache)")
        group = g.query_heads // g.kv_heads
        q = query[0, :, 0, :].reshape(g.kv_heads, group, g.head_dim)[self._heads]
        k = key[0][self._heads]
        self._pending[layer] = [
            rules.select(spec, q, k, self._context, self.options.gqa_reduce)
            for spec in self.options.algorithms
        ]

    # -- the driver -----------------------------------------------------------------------
    def _prefill(self, ids: torch.Tensor):
        self._phase = "prefill"
        self._prefill_seen = {}
        out = self.model(input_ids=ids, use_cache=True)
        self._phase = "idle"
        if not self._prefill_seen:
            raise CaptureError(
                f"no attention call was intercepted while {type(self.model).__name__} ran: its "
                "attention does not go through the hooked attention function (hooks.py)")
        prompt = ids.shape[1]
        shapes = {v[:3] for v in self._prefill_seen.values()}
        if len(shapes) != 1:
            raise CaptureError(f"the layers' attention shapes differ (query heads, KV heads, head "
                               f"dim): {sorted(shapes)}; the trace needs one geometry")
        hq, hkv, dim = shapes.pop()
        for layer, v in sorted(self._prefill_seen.items()):
            if v[3] != prompt or v[4] != prompt:
                raise CaptureError(
                    f"layer {layer}: prefill of {prompt} tokens gave {v[3]} queries and {v[4]} "
                    "keys; the capture needs causal self-attention over an empty cache")
        if hq % hkv != 0:
            raise CaptureError(f"{hq} query heads are not a multiple of {hkv} KV heads")
        geometry = Geometry(sorted(self._prefill_seen), hq, hkv, dim)
        if self.geometry is None:
            self._set_geometry(geometry)
        elif geometry.layers != self.geometry.layers or geometry.query_heads != hq:
            raise CaptureError("the model's attention geometry changed between prompts")
        return out

    def _set_geometry(self, g: Geometry) -> None:
        self.geometry = g
        layers = self.options.layers if self.options.layers is not None else g.layers
        missing = [x for x in layers if x not in g.layers]
        if missing:
            raise CaptureError(f"--layers: layer(s) {id_text(missing)} do not exist: the model "
                               f"has {len(g.layers)} attention layers ({g.layers[0]}-"
                               f"{g.layers[-1]})")
        heads = self.options.kv_heads if self.options.kv_heads is not None else list(
            range(g.kv_heads))
        bad = [h for h in heads if h >= g.kv_heads]
        if bad:
            raise CaptureError(f"--kv-heads: KV head(s) {id_text(bad)} do not exist: the model has "
                               f"{g.kv_heads} KV heads (0-{g.kv_heads - 1})")
        self._layers, self._heads = list(layers), list(heads)
        self._wanted = set(layers)

    def _next_token(self, logits: torch.Tensor, generator: torch.Generator) -> int:
        logits = logits.float().cpu()
        if self.options.decode == "greedy":
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / self.options.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=generator))

    def _device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    def run(self, prompts: list[list[int]], out_path: str, progress=None) -> dict:
        """Captures every prompt (lists of token ids) and writes the JSON Lines trace to out_path
        (atomically: out_path appears only when complete; see output_target). An out_path
        containing '{algorithm}' gives one trace per algorithm, the name put in its place.
        Returns a summary."""
        if not prompts:
            raise CaptureError("no prompt given")
        for i, p in enumerate(prompts):
            if len(p) < 1:
                raise CaptureError(f"prompt {i} is empty")
        algos = self.options.algorithms
        paths = output_paths(out_path, [a.name for a in algos])
        for path in paths:
            check_output(path, path)
        # The step lines wait in a hidden folder beside the first output that is a regular file.
        tmp_dir = next((os.path.dirname(target) for target, in_place in map(output_target, paths)
                        if not in_place), None)
        undo = hooks.install(self.model, self.recorder)
        device = self._device()
        generator = torch.Generator().manual_seed(self.options.seed)
        requests = []
        try:
            with tempfile.TemporaryDirectory(dir=tmp_dir, prefix=".spin-capture-") as tmp:
                for pi, prompt in enumerate(prompts):
                    with contextlib.ExitStack() as stack:
                        files = [stack.enter_context(_StepLines(
                                     os.path.join(tmp, f"{pi}-{a}.jsonl"), pi, tmp))
                                 for a in range(len(algos))]
                        steps = self._capture_prompt(pi, prompt, files, device, generator,
                                                     progress)
                    for a, spec in enumerate(algos):
                        requests.append((pi * len(algos) + a, pi, len(prompt), steps, spec.name,
                                         files[a].name))
                if "{algorithm}" in out_path:
                    outputs = [(path, [r for r in requests if r[4] == spec.name], [spec])
                               for path, spec in zip(paths, algos)]
                else:
                    outputs = [(out_path, requests, algos)]
                self._write_outputs(outputs)
        finally:
            undo()
            self._phase = "idle"
        return self._summary(paths, requests)

    def _capture_prompt(self, pi, prompt, files, device, generator, progress) -> int:
        algos = self.options.algorithms
        with torch.no_grad():
            ids = torch.tensor([prompt], dtype=torch.long, device=device)
            out = self._prefill(ids)
            past = out.past_key_values
            token = self._next_token(out.logits[0, -1], generator)
            steps = 0
            for s in range(self.options.max_steps):
                if self.options.stop_at_eos and token in self.options.eos_token_ids:
                    break
                self._phase, self._step, self._context = "decode", s, len(prompt) + s
                self._pending = {}
                out = self.model(input_ids=torch.tensor([[token]], device=device),
                                 past_key_values=past, use_cache=True)
                self._phase = "idle"
                missing = [x for x in self._layers if x not in self._pending]
                if missing:
                    raise CaptureError(f"decode step {s}: the attention of layer(s) {missing} "
                                       "was not intercepted")
                for a in range(len(algos)):
                    for li, layer in enumerate(self._layers):
                        line = {"type": "step", "request": pi * len(algos) + a, "layer": li,
                                "step": s, "selections": self._pending[layer][a]}
                        files[a].write(json.dumps(line, separators=(",", ":")) + "\n")
                past = out.past_key_values
                token = self._next_token(out.logits[0, -1], generator)
                steps = s + 1
                if progress:
                    progress(pi, s)
        return steps

    def _header(self, algorithms=None) -> dict:
        g = self.geometry
        group = g.query_heads // g.kv_heads
        o = self.options
        desc = (f"spin_capture: model {o.model_name}; layers {self._layers} of {len(g.layers)}; "
                f"KV heads {self._heads} of {g.kv_heads} ({group} query heads each); "
                f"GQA reduction {o.gqa_reduce}; decode {o.decode}"
                + (f" (temperature {o.temperature}, seed {o.seed})" if o.decode == "sample" else "")
                + f"; torch {torch.__version__}")
        if o.source:
            desc += "; " + o.source
        return {
            "type": "header", "format": "spin-trace", "version": "1.0",
            "model": {"name": o.model_name, "layers": len(self._layers),
                      "query_heads": len(self._heads) * group, "kv_heads": len(self._heads),
                      "head_dim": g.head_dim, "dtype_bytes": o.dtype_bytes},
            "algorithms": [a.header_entry() for a in (algorithms or o.algorithms)],
            "source": desc, "seed": o.header_seed,
        }

    def _write_outputs(self, outputs) -> None:
        """outputs: (path, requests, algorithms) of each trace. Each is written to PATH.partial
        (see output_target) and the partial files are renamed only once all are complete: a
        failure leaves no partial file and no new output, and is a CaptureError naming the path."""
        pending = []  # (path, partial, target) written or being written, not yet renamed
        try:
            for path, requests, algorithms in outputs:
                target, in_place = output_target(path)
                if in_place:
                    self._write(target, requests, algorithms)
                else:
                    pending.append((path, target + ".partial", target))
                    self._write(target + ".partial", requests, algorithms)
            while pending:
                path, partial, target = pending[0]
                os.replace(partial, target)
                pending.pop(0)
        except OSError as e:
            raise CaptureError(f"cannot write {path}: {e.strerror or e}") from None
        finally:
            for _, partial, _ in pending:
                with contextlib.suppress(OSError):
                    os.remove(partial)

    def _write(self, file: str, requests, algorithms) -> None:
        with open(file, "w") as out:
            out.write(json.dumps(self._header(algorithms), separators=(",", ":")) + "\n")
            for rid, pi, prompt_tokens, steps, algo, path in requests:
                line = {"type": "request", "id": rid,
                        "arrival_us": pi * self.options.arrival_interval_us,
                        "prompt_tokens": prompt_tokens, "output_tokens": steps,
                        "decode_steps": steps, "algorithm": algo}
                out.write(json.dumps(line, separators=(",", ":")) + "\n")
                with open(path) as f:
                    for chunk in iter(lambda: f.read(1 << 20), ""):
                        out.write(chunk)

    def _summary(self, paths, requests) -> dict:
        return {"out": paths, "requests": len(requests),
                "prompts": len({r[1] for r in requests}),
                "decode_steps": sum(r[3] for r in requests) // max(1, len(self.options.algorithms)),
                "layers": list(self._layers), "kv_heads": list(self._heads),
                "model": self._header()["model"]}
