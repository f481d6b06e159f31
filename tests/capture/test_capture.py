#!/usr/bin/env python3
"""Tests of the capture tool (traces/capture, docs/trace-capture.md).

    python3 tests/capture/test_capture.py --spin build/spin [-v] [unittest args]

A tiny Llama-style model in plain PyTorch (spin_capture.tiny_llama, random weights) is hooked
through the same attention-function wrapper the tool uses for Hugging Face models. The test
decodes the same prompts itself, records the queries and keys its attention function receives,
applies each selection rule *by hand* (plain Python loops over floats, written here
independently of spin_capture.rules) and requires the tool's JSON Lines output to equal it,
selection by selection. Then the real `spin trace import/info/stats/export` run on the output.
"""

import contextlib
import importlib.util
import io
import json
import math
import os
import random
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CAPTURE = os.path.join(ROOT, "traces", "capture", "capture.py")
sys.path.insert(0, os.path.join(ROOT, "traces", "capture"))

try:
    import torch
except ImportError:
    print(f"capture tests: FAILED: PyTorch is not importable by {sys.executable}; install "
          "python3-torch (scripts/bootstrap.sh does)", file=sys.stderr)
    sys.exit(1)

from spin_capture import Capture, CaptureError, CaptureOptions, rules  # noqa: E402
from spin_capture import hooks, tiny_llama  # noqa: E402
from spin_capture import cli  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import spin_unittest  # noqa: E402  (tests/spin_unittest.py)

SPIN = spin_unittest.default_spin()  # main() sets the binary given by --spin

CONFIG = {"num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
          "head_dim": 16, "hidden_size": 64, "intermediate_size": 128, "vocab_size": 256}
SEED = 7

# The algorithms as the test configures them on the command line, spelled out by hand.
ALGOS = {
    "quest": dict(g=16, page=16, budget_tokens=48, ratio=0.0, sink=0, local=16),
    "shadowkv": dict(g=8, page=8, budget_tokens=0, ratio=0.2, sink=16, local=24),
    "token": dict(g=1, page=16, budget_tokens=24, ratio=0.0, sink=4, local=8),
}
ALGO_ARGS = ["--algorithm", "quest,shadowkv,token",
             "--budget", "quest=48", "--budget", "shadowkv=20%", "--budget", "token=24",
             "--local-window-tokens", "shadowkv=24",
             "--sink-tokens", "token=4", "--local-window-tokens", "token=8"]


# ---------------------------------------------------------------------------------------------
# The reference: an independent decode loop and the rules by hand.

def page_static(a, context):
    """(first dynamic token, end of dynamic tokens): sinks rounded up to pages; the local window
    and the unfinished last page rounded down to pages."""
    page = a["page"]
    sinks = min(a["sink"], context)
    sink_end_token = -(-sinks // page) * page
    local_start = max(context - a["local"], 0)
    local_page = min(local_start // page, context // page)
    return sink_end_token, max(sink_end_token, local_page * page)


def score_by_hand(name, a, qs, keys, part):
    """Scores of partition `part` for each query in qs (lists of floats)."""
    g = a["g"]
    block = keys[part * g:(part + 1) * g]
    dim = len(qs[0])
    if name == "token":
        k = block[0]
        return [sum(q[x] * k[x] for x in range(dim)) for q in qs]
    if name == "shadowkv":
        mean = [sum(k[x] for k in block) / g for x in range(dim)]
        return [sum(q[x] * mean[x] for x in range(dim)) for q in qs]
    lo = [min(k[x] for k in block) for x in range(dim)]
    hi = [max(k[x] for k in block) for x in range(dim)]
    return [sum(max(q[x] * lo[x], q[x] * hi[x]) for x in range(dim)) for q in qs]


class NearTie(Exception):
    pass


def select_by_hand(name, a, qs, keys, context, reduce):
    g = a["g"]
    lo_tok, hi_tok = page_static(a, context)
    first = -(-lo_tok // g)
    last = max(hi_tok // g, first)  # partitions [first, last) touch no static page
    budget = math.ceil((a["budget_tokens"] + a["ratio"] * context) / g)
    k = min(budget, last - first)
    scored = []
    for part in range(first, last):
        per_head = score_by_hand(name, a, qs, keys, part)
        scored.append((sum(per_head) if reduce == "sum" else max(per_head), part))
    scored.sort(key=lambda t: (-t[0], t[1]))
    if 0 < k < len(scored):
        a_score, b_score = scored[k - 1][0], scored[k][0]
        if abs(a_score - b_score) <= 1e-9 * (1 + abs(a_score)):
            raise NearTie(f"{name}: scores {a_score} and {b_score} at the budget's edge")
    return sorted(p for _, p in scored[:k])


def reference(config, seed, prompts, steps, layers=None, heads=None, reduce="sum", algos=ALGOS):
    """Greedy decode of each prompt with the test's own loop; returns
    {(prompt, algorithm, trace layer, step): [selection per trace head]} and the tokens fed."""
    model = tiny_llama.build(tiny_llama.TinyLlamaConfig(**config), seed=seed)
    log = []

    def recording_attention(module, query, key, value, mask, **kwargs):
        log.append((module.layer_idx, query.detach().clone(), key.detach().clone()))
        return tiny_llama.eager_attention_forward(module, query, key, value, mask, **kwargs)

    for m in model.modules():
        if isinstance(m, tiny_llama.Attention):
            m.attention_interface = recording_attention
    n_layers = config["num_hidden_layers"]
    layers = layers if layers is not None else list(range(n_layers))
    heads = heads if heads is not None else list(range(config["num_key_value_heads"]))
    group = config["num_attention_heads"] // config["num_key_value_heads"]
    out, fed = {}, []
    with torch.no_grad():
        for pi, prompt in enumerate(prompts):
            result = model(torch.tensor([prompt]))
            cache = result.past_key_values
            token = int(result.logits[0, -1].argmax())
            tokens = []
            for s in range(steps):
                log.clear()
                tokens.append(token)
                result = model(torch.tensor([[token]]), past_key_values=cache)
                token = int(result.logits[0, -1].argmax())
                assert [entry[0] for entry in log] == list(range(n_layers))
                context = len(prompt) + s
                for li, layer in enumerate(layers):
                    _, query, key = log[layer]
                    assert key.shape[2] == context + 1
                    for name, a in algos.items():
                        sel = []
                        for h in heads:
                            qs = [query[0, h * group + j, 0].double().tolist() for j in range(group)]
                            keys = key[0, h, :context].double().tolist()
                            sel.append(select_by_hand(name, a, qs, keys, context, reduce))
                        out[(pi, name, li, s)] = sel
            fed.append(tokens)
    return out, fed


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def captured_selections(lines, algo_names):
    """{(prompt, algorithm, layer, step): selections} from the tool's output."""
    requests, out = {}, {}
    for line in lines:
        if line["type"] == "request":
            requests[line["id"]] = line
        elif line["type"] == "step":
            rid = line["request"]
            prompt, algo = divmod(rid, len(algo_names))
            assert requests[rid]["algorithm"] == algo_names[algo]
            out[(prompt, algo_names[algo], line["layer"], line["step"])] = line["selections"]
    return out


def differences(expected, actual):
    diffs = []
    for key in sorted(set(expected) | set(actual), key=str):
        if expected.get(key) != actual.get(key):
            diffs.append(f"{key}: by hand {expected.get(key)}, captured {actual.get(key)}")
    return diffs


def run_capture(args):
    return subprocess.run([sys.executable, CAPTURE, *args], capture_output=True, text=True)


def run_cli_in_process(args):
    """(exit status, stdout, stderr) of the command line run in this process (no new torch
    import per case)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(args)
        except SystemExit as e:  # argparse: --help, usage errors
            status = e.code
    return status, out.getvalue(), err.getvalue()


def half_runs_on_cpu():
    try:
        torch.nn.functional.linear(torch.ones(1, 2, dtype=torch.half),
                                   torch.ones(2, 2, dtype=torch.half))
    except RuntimeError:
        return False
    return True


def make_prompts(lengths, seed):
    rng = random.Random(seed)
    return [[rng.randrange(CONFIG["vocab_size"]) for _ in range(n)] for n in lengths]


class CaptureTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = cls.tmp.name
        cls.prompts = make_prompts([150, 203], seed=3)
        cls.dataset = os.path.join(cls.dir, "prompts.jsonl")
        with open(cls.dataset, "w") as f:
            for p in cls.prompts:
                f.write(json.dumps({"id": len(p), "input_ids": p}) + "\n")
        cls.steps = 10
        cls.out = os.path.join(cls.dir, "all.jsonl")
        cls.result = run_capture(
            ["--tiny-llama", "--tiny-config", json.dumps(CONFIG), "--seed", str(SEED),
             "--dataset", cls.dataset, "--field", "input_ids", "--max-steps", str(cls.steps),
             *ALGO_ARGS, "--quiet", "--out", cls.out])
        cls.expected, cls.fed = reference(CONFIG, SEED, cls.prompts, cls.steps)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        self.assertEqual(self.result.returncode, 0, self.result.stderr)

    def write(self, name, data: bytes):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_selections_equal_the_rules_applied_by_hand(self):
        lines = read_jsonl(self.out)
        names = list(ALGOS)
        actual = captured_selections(lines, names)
        self.assertEqual(len(self.expected), 2 * 3 * 3 * self.steps)
        self.assertEqual(differences(self.expected, actual), [])
        # Not a vacuous comparison: budgets bind (selections are proper subsets) and differ.
        sizes = {name: {len(s) for k, v in self.expected.items() if k[1] == name for s in v}
                 for name in names}
        self.assertEqual(sizes["quest"], {3})
        self.assertEqual(sizes["token"], {24})
        self.assertTrue(all(n >= 4 for n in sizes["shadowkv"]), sizes)

    def test_header_and_request_lines_describe_the_capture(self):
        lines = read_jsonl(self.out)
        header = lines[0]
        self.assertEqual(header["type"], "header")
        # The served KV cache's element size (bf16), not that of the float32 the capture ran in.
        self.assertEqual(header["model"], {"name": "tiny-llama", "layers": 3, "query_heads": 4,
                                           "kv_heads": 2, "head_dim": 16, "dtype_bytes": 2})
        algos = {a["name"]: a for a in header["algorithms"]}
        for name, a in ALGOS.items():
            got = algos[name]
            self.assertEqual((got["partition_tokens"], got["page_tokens"], got["budget_tokens"],
                              got["budget_ratio"], got["sink_tokens"], got["local_window_tokens"]),
                             (a["g"], a["page"], a["budget_tokens"], a["ratio"], a["sink"],
                              a["local"]), name)
        requests = [x for x in lines if x["type"] == "request"]
        self.assertEqual([(r["id"], r["prompt_tokens"], r["decode_steps"], r["algorithm"])
                          for r in requests],
                         [(pi * 3 + a, len(p), self.steps, name)
                          for pi, p in enumerate(self.prompts) for a, name in enumerate(ALGOS)])

    def test_layer_and_head_subsets_with_max_reduction(self):
        out = os.path.join(self.dir, "subset.jsonl")
        result = run_capture(
            ["--tiny-llama", "--tiny-config", json.dumps(CONFIG), "--seed", str(SEED),
             "--dataset", self.dataset, "--field", "input_ids", "--limit", "1",
             "--max-steps", "6", *ALGO_ARGS, "--layers", "2,0", "--kv-heads", "1",
             "--gqa-reduce", "max", "--quiet", "--out", out])
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = read_jsonl(out)
        self.assertEqual(lines[0]["model"]["layers"], 2)
        self.assertEqual((lines[0]["model"]["kv_heads"], lines[0]["model"]["query_heads"]), (1, 2))
        expected, _ = reference(CONFIG, SEED, self.prompts[:1], 6, layers=[2, 0], heads=[1],
                                reduce="max")
        self.assertEqual(differences(expected, captured_selections(lines, list(ALGOS))), [])
        # The reduction matters on this data: summing the group's scores selects differently.
        summed, _ = reference(CONFIG, SEED, self.prompts[:1], 6, layers=[2, 0], heads=[1])
        self.assertNotEqual(expected, summed)

    def test_one_trace_per_algorithm_holds_that_algorithms_requests(self):
        pattern = os.path.join(self.dir, "split-{algorithm}.jsonl")
        result = run_capture(
            ["--tiny-llama", "--tiny-config", json.dumps(CONFIG), "--seed", str(SEED),
             "--dataset", self.dataset, "--field", "input_ids", "--limit", "1",
             "--max-steps", "3", *ALGO_ARGS, "--quiet", "--out", pattern])
        self.assertEqual(result.returncode, 0, result.stderr)
        names = list(ALGOS)
        for a, name in enumerate(names):
            lines = read_jsonl(pattern.replace("{algorithm}", name))
            self.assertEqual([x["name"] for x in lines[0]["algorithms"]], [name])
            requests = [x for x in lines if x["type"] == "request"]
            self.assertEqual([(r["id"], r["algorithm"]) for r in requests], [(a, name)])
            got = {(x["layer"], x["step"]): x["selections"] for x in lines if x["type"] == "step"}
            want = {(k[2], k[3]): v for k, v in self.expected.items()
                    if k[0] == 0 and k[1] == name and k[3] < 3}
            self.assertEqual(got, want)

    def test_the_comparison_catches_a_wrong_selection(self):
        actual = captured_selections(read_jsonl(self.out), list(ALGOS))
        key = sorted(actual, key=str)[5]
        wrong = dict(actual)
        wrong[key] = [list(s) for s in actual[key]]
        wrong[key][0][-1] += 1
        self.assertEqual(len(differences(self.expected, wrong)), 1)

    def test_spin_import_info_stats_and_export_read_the_capture_back(self):
        spt = os.path.join(self.dir, "all.spt")
        imported = subprocess.run([SPIN, "trace", "import", self.out, "--out", spt],
                                  capture_output=True, text=True)
        self.assertEqual(imported.returncode, 0, imported.stderr)
        total = sum(len(s) for v in self.expected.values() for s in v)
        self.assertIn(f"6 requests, {total} selections", imported.stdout)
        info = subprocess.run([SPIN, "trace", "info", spt, "--verify"], capture_output=True,
                              text=True)
        self.assertEqual(info.returncode, 0, info.stderr)
        self.assertIn(f"selections    {total} ", info.stdout)
        stats_json = os.path.join(self.dir, "stats.json")
        stats = subprocess.run([SPIN, "trace", "stats", spt, "--json", stats_json],
                               capture_output=True, text=True)
        self.assertEqual(stats.returncode, 0, stats.stderr)
        self.assertIn("Exact LRU", stats.stdout)
        with open(stats_json) as f:
            self.assertIsInstance(json.load(f), dict)
        exported = subprocess.run([SPIN, "trace", "export", spt, "--format", "jsonl"],
                                  capture_output=True, text=True)
        self.assertEqual(exported.returncode, 0, exported.stderr)
        back = [json.loads(x) for x in exported.stdout.splitlines()]
        self.assertEqual(back, read_jsonl(self.out))

    def test_spin_replay_runs_the_default_capture_with_the_models_keys(self):
        # docs/trace-capture.md: replay needs a config whose model keys match the trace.
        spt = os.path.join(self.dir, "replay.spt")
        imported = subprocess.run([SPIN, "trace", "import", self.out, "--out", spt],
                                  capture_output=True, text=True)
        self.assertEqual(imported.returncode, 0, imported.stderr)
        model = ["--set", "model.layers=3", "--set", "model.query_heads=4",
                 "--set", "model.kv_heads=2", "--set", "model.head_dim=16"]
        replay = subprocess.run([SPIN, "replay", spt, *model, "--set", "model.dtype=bf16"],
                                capture_output=True, text=True)
        self.assertEqual(replay.returncode, 0, replay.stderr)
        self.assertIn("6 requests, 60 decode steps", replay.stdout)
        # --dtype-bytes 1 is an fp8 cache.
        out = os.path.join(self.dir, "fp8.jsonl")
        status, _, err = run_cli_in_process(
            ["--tiny-llama", "--tiny-config", json.dumps(CONFIG), "--random-prompts", "1",
             "--prompt-tokens", "40", "--max-steps", "2", "--dtype-bytes", "1", "--quiet",
             "--out", out])
        self.assertEqual(status, 0, err)
        self.assertEqual(read_jsonl(out)[0]["model"]["dtype_bytes"], 1)
        imported = subprocess.run([SPIN, "trace", "import", out, "--out", spt],
                                  capture_output=True, text=True)
        self.assertEqual(imported.returncode, 0, imported.stderr)
        replay = subprocess.run([SPIN, "replay", spt, *model, "--set", "model.dtype=fp8"],
                                capture_output=True, text=True)
        self.assertEqual(replay.returncode, 0, replay.stderr)

    def test_hook_leaves_the_model_output_unchanged(self):
        model = tiny_llama.build(tiny_llama.TinyLlamaConfig(**CONFIG), seed=SEED)
        ids = torch.tensor([self.prompts[0][:40]])
        with torch.no_grad():
            plain = model(ids).logits
            seen = []
            recorder = hooks.AttentionRecorder(lambda layer, q, k: seen.append(layer))
            undo = hooks.install(model, recorder)
            hooked = model(ids).logits
            undo()
            after = model(ids).logits
        self.assertTrue(torch.equal(plain, hooked))
        self.assertEqual(seen, [0, 1, 2])
        self.assertTrue(torch.equal(plain, after))
        self.assertIs(model.layers[0].self_attn.attention_interface,
                      tiny_llama.eager_attention_forward)

    def test_tiny_llama_decode_with_cache_matches_a_full_forward(self):
        model = tiny_llama.build(tiny_llama.TinyLlamaConfig(**CONFIG), seed=SEED)
        seq = self.prompts[0][:60] + self.fed[0][:5]
        with torch.no_grad():
            full = model(torch.tensor([seq])).logits[0]
            result = model(torch.tensor([seq[:60]]))
            cache, steps = result.past_key_values, []
            for t in seq[60:]:
                result = model(torch.tensor([[t]]), past_key_values=cache)
                steps.append(result.logits[0, -1])
        self.assertTrue(torch.allclose(torch.stack(steps), full[60:], atol=1e-4, rtol=1e-4))

    def test_stop_at_eos_ends_the_request_before_the_eos_step(self):
        eos = self.fed[0][3]
        self.assertNotIn(eos, self.fed[0][:3])
        config = dict(CONFIG, eos_token_id=eos)
        out = os.path.join(self.dir, "eos.jsonl")
        result = run_capture(
            ["--tiny-llama", "--tiny-config", json.dumps(config), "--seed", str(SEED),
             "--dataset", self.dataset, "--field", "input_ids", "--limit", "1",
             "--max-steps", "8", "--stop-at-eos", "--algorithm", "quest", "--budget", "48",
             "--quiet", "--out", out])
        self.assertEqual(result.returncode, 0, result.stderr)
        request = [x for x in read_jsonl(out) if x["type"] == "request"][0]
        self.assertEqual((request["decode_steps"], request["output_tokens"]), (3, 3))

    def test_bad_input_is_reported_with_the_option_and_what_was_expected(self):
        base = ["--tiny-llama", "--tiny-config", json.dumps(CONFIG), "--random-prompts", "1",
                "--prompt-tokens", "40", "--max-steps", "2", "--quiet",
                "--out", os.path.join(self.dir, "bad.jsonl")]
        cases = [
            (["--algorithm", "quest,h2o"], "--algorithm: unknown algorithm 'h2o'"),
            (["--layers", "1,7"], "--layers: layer(s) [7] do not exist: the model has 3"),
            (["--kv-heads", "0-2"], "--kv-heads: KV head(s) [2] do not exist"),
            (["--layers", "a-b"], "--layers: 'a-b'"),
            (["--page-tokens", "12"], "--page-tokens: '12' is not a power of two"),
            (["--budget", "0"], "--budget: '0' is not a budget"),
            (["--budget", "seer=64"], "names algorithm 'seer', which is not among --algorithm"),
            (["--algorithm", "token", "--partition-tokens", "2"],
             "token-level selection needs partition tokens = 1"),
            (["--prompt", "hello"], "needs a tokenizer"),
            (["--max-steps", "0"], "--max-steps: expected an integer in [1, 4294967295], got 0"),
            # The import format's limits (traces/README.md), checked before the capture.
            (["--seed", "-1"], "--seed: expected an integer in [0, 18446744073709551615]"),
            (["--seed", str(2**64)], "--seed: expected an integer in [0, 18446744073709551615]"),
            (["--arrival-interval-us", str(10**15 + 1)],
             "--arrival-interval-us: expected an integer in [0, 1000000000000000]"),
            (["--random-prompts", "3", "--arrival-interval-us", str(6 * 10**14)],
             "prompt 3 would arrive at 1200000000000000 us"),
            (["--max-steps", str(2**32 - 1)],
             "--max-steps 4294967295: with a prompt of 40 tokens a request would reach"),
            (["--budget", str(2**32)], "an integer in [1, 4294967295]"),
            (["--page-tokens", str(2**32)], "is not a power of two in [1, 4294967295]"),
            (["--partition-tokens", str(2**32)], "is not an integer in [1, 4294967295]"),
            (["--sink-tokens", str(2**32)], "is not an integer in [0, 4294967295]"),
            (["--local-window-tokens", str(2**32)], "is not an integer in [0, 4294967295]"),
            # Output targets, checked before the model loads.
            (["--out", self.dir], f"{self.dir} is a directory, expected a file"),
            (["--out", os.path.join(self.dir, "none", "x.jsonl")], "none does not exist"),
            (["--out", "/proc/x.jsonl"], "--out /proc/x.jsonl: cannot create a file in /proc"),
            (["--spt", os.path.join(self.dir, "t-{algorithm}.spt")],
             "--out and --spt: give {algorithm} in both"),
            (["--out", os.path.join(self.dir, "bad-{algorithm}.jsonl"), "--spt", "t.spt"],
             "--out and --spt: give {algorithm} in both"),
            # Models, devices and dtypes.
            (["--tokenizer", "/tok"], "--tokenizer applies to --hf-model and --hf-config only"),
            (["--device", "foo"], "--device foo: not a device this torch can use"),
            *([(["--device", "cuda"], "--device cuda: not a device this torch can use")]
              if not torch.cuda.is_available() else []),
            *([(["--dtype", "float16", "--device", "cpu"],
                "--dtype float16 on --device cpu: the model cannot run")]
              if not half_runs_on_cpu() else []),
            *[(["--tiny-config", json.dumps(dict(CONFIG, **{key: value}))],
               f"--tiny-config: {key} must be an integer >= 1, got {value}")
              for key, value in (("num_key_value_heads", 0), ("head_dim", -2), ("vocab_size", 0),
                                 ("hidden_size", 0), ("num_hidden_layers", 0))],
            # Prompts and id lists.
            (["--dataset", self.write("latin1.jsonl", b'{"p": [1]}\n{"p": "caf\xe9"}\n'),
              "--field", "p"], "latin1.jsonl:2: not UTF-8 (byte 0xe9)"),
            (["--prompt-file", self.write("latin1.txt", b"one\ntwo\ncaf\xe9\n")],
             "latin1.txt:3: not UTF-8 (byte 0xe9)"),
            (["--dataset", self.write("bools.jsonl", b'{"p": [true, false, 1]}\n'), "--field", "p"],
             "bools.jsonl:1: field 'p': token 0 is true, not a token id in [0, 256)"),
            (["--dataset", self.write("empty.jsonl", b'{"p": [1]}\n\n{"p": []}\n'), "--field",
              "p"], "empty.jsonl:3: field 'p' has no tokens"),
            (["--kv-heads", "0-100000"], "--kv-heads: the range '0-100000' holds 100001 ids"),
            (["--kv-heads", "0-1000"], "KV head(s) [2, 3, ..., 1000] (999 ids) do not exist"),
        ]
        for extra, message in cases:
            with self.subTest(extra=extra):
                status, _, err = run_cli_in_process(base + extra)
                self.assertEqual(status, 2, err)
                self.assertIn(message, err)
                self.assertTrue(err.startswith("capture.py: error: "), err)
                self.assertLess(len(err), 1000)
                self.assertFalse(os.path.exists(os.path.join(self.dir, "bad.jsonl")))
        status, _, err = run_cli_in_process(base + ["--dtype-bytes", "3"])
        self.assertEqual(status, 2)
        self.assertIn("argument --dtype-bytes: invalid choice: 3 (choose from 1, 2)", err)
        status, _, err = run_cli_in_process(["--random-prompts", "1", "--out", "x.jsonl"])
        self.assertEqual(status, 2)
        self.assertIn("give exactly one model", err)
        status, _, err = run_cli_in_process(["--tiny-llama", "--random-prompts", "1"])
        self.assertEqual(status, 2)
        self.assertIn("the following arguments are required: --out", err)
        if importlib.util.find_spec("transformers") is None:
            status, _, err = run_cli_in_process(
                ["--hf-model", "/nonexistent", "--random-prompts", "1",
                 "--out", os.path.join(self.dir, "hf.jsonl")])
            self.assertEqual(status, 2)
            self.assertIn("--hf-model needs the transformers package", err)

    def test_tokenized_text_is_checked_against_the_vocabulary(self):
        args = cli.build_parser().parse_args(["--tiny-llama", "--prompt", "hi", "--out", "x"])
        tokenizer = lambda text: {"input_ids": [1, 300]}  # noqa: E731
        with self.assertRaisesRegex(CaptureError, r"--prompt #1: token 1 is 300, not a token id "
                                                  r"in \[0, 256\)"):
            cli.load_prompts(args, tokenizer, 256)

    def test_an_output_that_cannot_be_written_leaves_nothing(self):
        folder = tempfile.mkdtemp(dir=self.dir)
        base = ["--tiny-llama", "--tiny-config", json.dumps(CONFIG), "--random-prompts", "1",
                "--prompt-tokens", "40", "--max-steps", "2", "--algorithm", "quest,token",
                "--quiet", "--out", os.path.join(folder, "x-{algorithm}.jsonl")]
        os.mkdir(os.path.join(folder, "x-token.jsonl"))
        status, _, err = run_cli_in_process(base)
        self.assertEqual(status, 2, err)
        self.assertIn("x-token.jsonl is a directory, expected a file", err)
        self.assertEqual(os.listdir(folder), ["x-token.jsonl"])
        # A failure while writing (here: the second trace's partial file cannot be created)
        # removes the partial files written and writes no trace.
        os.rmdir(os.path.join(folder, "x-token.jsonl"))
        model = tiny_llama.build(tiny_llama.TinyLlamaConfig(**CONFIG), seed=SEED)
        options = CaptureOptions(algorithms=[rules.algorithm("quest"), rules.algorithm("token")],
                                 max_steps=2)
        blocker = os.path.join(folder, "x-token.jsonl.partial")
        with self.assertRaisesRegex(CaptureError, "cannot write .*x-token.jsonl: Is a directory"):
            Capture(model, options).run([self.prompts[0][:40]],
                                        os.path.join(folder, "x-{algorithm}.jsonl"),
                                        progress=lambda prompt, step: os.makedirs(blocker,
                                                                                  exist_ok=True))
        self.assertEqual(os.listdir(folder), ["x-token.jsonl.partial"])

    def test_a_link_fifo_or_device_output_is_written_as_spin_writes_it(self):
        folder = tempfile.mkdtemp(dir=self.dir)
        base = ["--tiny-llama", "--tiny-config", json.dumps(CONFIG), "--random-prompts", "1",
                "--prompt-tokens", "40", "--max-steps", "2", "--quiet"]
        link, target = os.path.join(folder, "link.jsonl"), os.path.join(folder, "target.jsonl")
        os.symlink("target.jsonl", link)  # dangling: its target is created
        status, _, err = run_cli_in_process(base + ["--out", link])
        self.assertEqual(status, 0, err)
        self.assertEqual(os.readlink(link), "target.jsonl")
        self.assertEqual(read_jsonl(target)[0]["type"], "header")
        fifo = os.path.join(folder, "fifo")
        os.mkfifo(fifo)
        received = []
        reader = threading.Thread(target=lambda: received.append(open(fifo).read()), daemon=True)
        reader.start()
        status, _, err = run_cli_in_process(base + ["--out", fifo])
        reader.join(timeout=30)
        self.assertEqual(status, 0, err)
        self.assertTrue(stat.S_ISFIFO(os.stat(fifo).st_mode))
        self.assertEqual(json.loads(received[0].splitlines()[0])["type"], "header")
        self.assertEqual(sorted(os.listdir(folder)), ["fifo", "link.jsonl", "target.jsonl"])

    def test_sigterm_and_sighup_remove_the_temporary_folder(self):
        def start(folder, ignore_hup=False):
            def child_signals():
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_hup else signal.SIG_DFL)
            child = subprocess.Popen(
                [sys.executable, CAPTURE, "--tiny-llama", "--random-prompts", "1",
                 "--prompt-tokens", "40", "--max-steps", "1000000", "--quiet",
                 "--out", os.path.join(folder, "t.jsonl")],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=child_signals)
            deadline = time.time() + 60
            while not os.listdir(folder) and time.time() < deadline:
                time.sleep(0.05)
            self.assertTrue(os.listdir(folder)[0].startswith(".spin-capture-"))
            return child

        for signum in (signal.SIGTERM, signal.SIGHUP):
            with self.subTest(signal=signum):
                folder = tempfile.mkdtemp(dir=self.dir)
                child = start(folder)
                child.send_signal(signum)
                _, err = child.communicate(timeout=60)
                self.assertEqual(child.returncode, 128 + signum, err)
                self.assertEqual(os.listdir(folder), [])
        # An ignored signal (nohup) stays ignored.
        folder = tempfile.mkdtemp(dir=self.dir)
        child = start(folder, ignore_hup=True)
        child.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        self.assertIsNone(child.poll())
        child.terminate()
        child.communicate(timeout=60)
        self.assertEqual(os.listdir(folder), [])

    def test_a_signal_during_the_spt_import_lets_spin_remove_its_partial_file(self):
        # A stand-in for spin: holds DST.partial until SIGTERM, which removes it (as spin's
        # atomic files do); a SIGKILL would leave it.
        folder = tempfile.mkdtemp(dir=self.dir)
        fake = os.path.join(self.dir, "fake-spin")
        with open(fake, "w") as f:
            f.write('#!/bin/sh\nexec >/dev/null 2>&1\ndst="$5"\n: > "$dst.partial"\n'
                    'sleep 60 & pid=$!\n'
                    'trap \'kill $pid; rm -f "$dst.partial"; exit 143\' TERM\nwait $pid\n')
        os.chmod(fake, 0o755)
        child = subprocess.Popen(
            [sys.executable, CAPTURE, "--tiny-llama", "--random-prompts", "1",
             "--prompt-tokens", "40", "--max-steps", "2", "--quiet",
             "--out", os.path.join(folder, "t.jsonl"), "--spt", os.path.join(folder, "t.spt"),
             "--spin", fake],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
        partial = os.path.join(folder, "t.spt.partial")
        deadline = time.time() + 60
        while not os.path.exists(partial) and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(os.path.exists(partial))
        time.sleep(0.2)  # the stand-in's trap is set
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
        self.assertEqual(child.returncode, 128 + signal.SIGTERM, err)
        self.assertEqual(os.listdir(folder), ["t.jsonl"])

    def test_a_write_error_in_the_step_lines_is_a_clear_error(self):
        # Files past 4 KiB fail with EFBIG (RLIMIT_FSIZE, SIGXFSZ ignored): the step lines of 24
        # steps do, before any output is written.
        import resource

        def limit_file_size():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

        folder = tempfile.mkdtemp(dir=self.dir)
        result = subprocess.run(
            [sys.executable, CAPTURE, "--tiny-llama", "--random-prompts", "1",
             "--prompt-tokens", "40", "--max-steps", "24", "--quiet",
             "--out", os.path.join(folder, "t.jsonl")],
            capture_output=True, text=True, preexec_fn=limit_file_size)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertRegex(result.stderr, r"error: cannot write the step lines of prompt 0 under "
                                        r".*\.spin-capture-.*: File too large")
        self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(os.listdir(folder), [])

    def test_help_explains_every_option(self):
        result = run_capture(["--help"])
        self.assertEqual(result.returncode, 0)
        for action in cli.build_parser()._actions:
            for option in action.option_strings:
                self.assertIn(option, result.stdout)
            self.assertTrue(action.help, f"{action.option_strings} has no help")


if __name__ == "__main__":
    sys.exit(spin_unittest.main("capture", sys.modules[__name__]))
