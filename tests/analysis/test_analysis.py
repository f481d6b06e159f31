#!/usr/bin/env python3
"""Tests of the analysis tools (analysis/plot.py, analysis/report.py; docs/analysis.md).

    /usr/bin/python3 tests/analysis/test_analysis.py --spin build/spin [-v] [unittest args]

Tiny sweeps are built with the real `spin sim` (tests/analysis/fixture.py writes the sweep folder
exactly as docs/sweeps.md lays it out). Each figure is drawn from them; the test reads what was
drawn back from the matplotlib artists (lines, bars, scatter offsets), converts it from the axis
unit named in the axis label, and requires it to equal the numbers of results.csv and of the
points' requests.csv, read here with the csv module. The command lines must write non-empty PNG
and PDF files (the same bytes when run twice), and bad input must exit 2 naming the problem.
"""
import base64
import contextlib
import csv
import importlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "analysis"))

try:
    for _module in ("pandas", "matplotlib", "matplotlib.colors"):
        importlib.import_module(_module)
except ImportError as e:
    print(f"analysis tests: FAILED: {e.name} is not importable by {sys.executable}; install "
          "python3-pandas and python3-matplotlib (scripts/bootstrap.sh does)", file=sys.stderr)
    sys.exit(1)

import fixture  # noqa: E402
import matplotlib  # noqa: E402
from spinplot import cli, data, figures, style  # noqa: E402
from spinplot import report as report_mod  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import spin_unittest  # noqa: E402  (tests/spin_unittest.py)

SPIN = spin_unittest.default_spin()  # main() sets the binary given by --spin
PLOT = os.path.join(ROOT, "analysis", "plot.py")
REPORT = os.path.join(ROOT, "analysis", "report.py")

# Sweep A: modes x policies x buffer ratios. Sweep B: policies x bucket counts x 2 seeds.
# M ("measured"): a subset of A's points, keys in another order, another kernel launch cost.
GRID_A = {"serving.mode": ["dense", "spin:shadowkv"],
          "cache.policy": ["bucketed-lru", "lru", "belady"],
          "cache.buffer_ratio": [1, 4]}
GRID_B = {"cache.policy": ["bucketed-lru", "lru", "belady"], "cache.buckets": [2, 8, 64]}
SEEDS_B = [1, 2]
GRID_M = {"cache.buffer_ratio": [4, 1], "cache.policy": ["lru"],
          "serving.mode": ["spin:shadowkv", "dense"]}
SETS_M = ["hardware.kernel_launch_us=12"]

TMP = None
A = B = M = RUN = REPLAY = None
UNITS = {"s": 1.0, "ms": 1e-3, "B": 1.0, "KiB": 1024.0, "MiB": 1024.0 ** 2, "GiB": 1024.0 ** 3}


def setUpModule():
    global TMP, A, B, M, RUN, REPLAY
    TMP = tempfile.mkdtemp(prefix="spin-analysis-test-")
    A = os.path.join(TMP, "a")
    B = os.path.join(TMP, "b")
    M = os.path.join(TMP, "m")
    RUN = os.path.join(TMP, "run")
    REPLAY = os.path.join(TMP, "replay")
    fixture.build_sweep(SPIN, A, GRID_A)
    fixture.build_sweep(SPIN, B, GRID_B, seeds=SEEDS_B)
    fixture.build_sweep(SPIN, M, GRID_M, sets=SETS_M)
    subprocess.run([SPIN, "sim", "--mode", "dense", "--no-timeline", "--out", RUN], check=True,
                   cwd=ROOT, capture_output=True)
    subprocess.run([SPIN, "replay", "--out", REPLAY], check=True, cwd=ROOT, capture_output=True)


def tearDownModule():
    if TMP and not os.environ.get("SPIN_KEEP_TMP"):
        shutil.rmtree(TMP, ignore_errors=True)


def rows(folder):
    return fixture.read_csv(os.path.join(folder, "results.csv"))


def num(text):
    return float(text)


def unit_of(label):
    """The divisor of an axis label's unit: 'TPOT (ms)' -> 1e-3; no or other unit -> 1."""
    m = re.search(r"\(([^()]*)\)$", label)
    return UNITS.get(m.group(1), 1.0) if m else 1.0


def lines_by_label(ax):
    return {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def requests_column(folder, point_folder, column):
    with open(os.path.join(folder, point_folder, "requests.csv"), newline="") as f:
        return [float(r[column]) for r in csv.DictReader(f) if r["rejected"] != "1"]


def run_tool(script, *args):
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          cwd=ROOT)


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_in_process(main, *args):
    """A tool's main() in this process (what plot.py / report.py call), with its exit status
    and output: cheaper than a new Python for the many small error and --help cases."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse: --help (0) and usage errors (2)
            code = e.code
    return Result(code, out.getvalue(), err.getvalue())


class Base(unittest.TestCase):
    def assertClose(self, got, want, msg=None):
        self.assertEqual(len(got), len(want), msg)
        for g, w in zip(got, want):
            self.assertAlmostEqual(float(g), float(w), delta=1e-9 * max(1.0, abs(float(w))),
                                   msg=msg)

    def assertColourOfMode(self, line, mode):
        self.assertEqual(matplotlib.colors.to_hex(line.get_color()).lower(),
                         style.MODE_COLOURS[mode.split(":")[0]].lower(), mode)

    def assertFiles(self, folder, name):
        for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
            path = os.path.join(folder, f"{name}.{ext}")
            self.assertTrue(os.path.isfile(path), path)
            with open(path, "rb") as f:
                head = f.read(4)
            self.assertEqual(head, magic, path)
            self.assertGreater(os.path.getsize(path), 2000, path)


class FixtureTest(Base):
    def test_results_csv_holds_each_points_summary(self):
        """fixture: results.csv follows docs/sweeps.md: fixed columns, swept keys, then the
        flattened summary.json of each point."""
        import json
        with open(os.path.join(A, "results.csv")) as f:
            header = f.readline().strip().split(",")
        self.assertEqual(header[:7], ["point", "status", "error", "folder", "serving.mode",
                                      "cache.policy", "cache.buffer_ratio"])
        self.assertEqual(header[7], "mode")
        for r in rows(A):
            with open(os.path.join(A, r["folder"], "summary.json")) as f:
                summary = fixture.flatten(json.load(f))
            self.assertEqual(r["mode"], r["serving.mode"])
            self.assertAlmostEqual(num(r["tpot_s.p99"]), summary["tpot_s.p99"])
            self.assertEqual(num(r["metadata.page_table_peak_bytes"]),
                             summary["metadata.page_table_peak_bytes"])
        self.assertEqual(len(rows(A)), 12)
        self.assertEqual(len(rows(B)), 18)


def expected_lines(table_rows, x, y, split, seeds=False):
    """{label: (xs, ys)} from results.csv rows: one series per value of the `split` columns
    (labelled 'first, k=v, ...'), y averaged over seeds, sorted by x."""
    out = {}
    for r in table_rows:
        label = ", ".join([r[split[0]]] + [f"{k}={r[k]}" for k in split[1:]])
        out.setdefault(label, {}).setdefault(num(r[x]), []).append(num(r[y]))
    return {label: (sorted(pts), [sum(pts[k]) / len(pts[k]) for k in sorted(pts)])
            for label, pts in out.items()}


class LineFigureTest(Base):
    def check_lines(self, plot, table_rows, x, y, split, panel=0, mode_col=None):
        ax = plot.fig.axes[panel]
        drawn = lines_by_label(ax)
        want = expected_lines(table_rows, x, y, split)
        self.assertEqual(sorted(drawn), sorted(want))
        xdiv, ydiv = unit_of(ax.get_xlabel()), unit_of(plot.fig.axes[0].get_ylabel())
        self.assertTrue(ax.get_xlabel())
        self.assertTrue(plot.fig.axes[0].get_ylabel())
        for label, (xs, ys) in want.items():
            line = drawn[label]
            self.assertClose([v * xdiv for v in line.get_xdata()], xs, label)
            self.assertClose([v * ydiv for v in line.get_ydata()], ys, label)
            if mode_col:
                self.assertColourOfMode(line, label.split(",")[0])
        return drawn

    def test_throughput_against_x_per_mode(self):
        """throughput: one line per mode (and policy, which varies), y = the CSV's
        throughput_tokens_per_s at each buffer ratio, coloured by mode."""
        plot = figures.throughput(data.load(A), x="cache.buffer_ratio")
        self.check_lines(plot, rows(A), "cache.buffer_ratio", "throughput_tokens_per_s",
                         ["serving.mode", "cache.policy"], mode_col=True)
        self.assertIn("output tokens/s", plot.fig.axes[0].get_ylabel())

    def test_latency_percentiles_one_panel_each(self):
        """latency: TTFT in s and TPOT in ms, one panel per percentile equal to the CSV."""
        table = data.load(A, ["cache.policy=lru"])
        subset = [r for r in rows(A) if r["cache.policy"] == "lru"]
        for metric in ("ttft", "tpot"):
            plot = figures.latency(table, metric, x="cache.buffer_ratio")
            self.assertEqual(len(plot.fig.axes), 3)
            for i, p in enumerate(("p50", "p90", "p99")):
                self.assertIn(p, plot.fig.axes[i].get_title())
                self.check_lines(plot, subset, "cache.buffer_ratio", f"{metric}_s.{p}",
                                 ["serving.mode"], panel=i, mode_col=True)
        self.assertEqual(unit_of(plot.fig.axes[0].get_ylabel()), 1e-3)  # TPOT in ms

    def test_pcie_and_batch(self):
        """pcie (bytes per token in an automatic binary unit) and batch equal the CSV."""
        table = data.load(A, ["cache.policy=bucketed-lru"])
        subset = [r for r in rows(A) if r["cache.policy"] == "bucketed-lru"]
        plot = figures.pcie(table, x="cache.buffer_ratio")
        top = max(float(r["h2d_bytes_per_output_token"]) for r in subset)
        unit = next(u for u, size in style.BYTE_UNITS if top >= size)
        self.assertIn(f"({unit})", plot.fig.axes[0].get_ylabel())
        self.assertLess(top / dict(style.BYTE_UNITS)[unit], 1024)
        self.check_lines(plot, subset, "cache.buffer_ratio", "h2d_bytes_per_output_token",
                         ["serving.mode"], mode_col=True)
        plot = figures.batch(table, x="cache.buffer_ratio")
        self.check_lines(plot, subset, "cache.buffer_ratio", "batch_mean", ["serving.mode"],
                         mode_col=True)

    def test_hit_ratio_against_buffer_ratio_per_policy(self):
        """hit-ratio: x = cache.buffer_ratio, one line per cache.policy (bucketed LRU, exact
        LRU, Belady) in the policy colours."""
        table = data.load(A, ["serving.mode=spin:shadowkv"])
        subset = [r for r in rows(A) if r["serving.mode"] == "spin:shadowkv"]
        plot = figures.hit_ratio(table)
        drawn = self.check_lines(plot, subset, "cache.buffer_ratio", "hit_ratio",
                                 ["cache.policy"])
        self.assertEqual(sorted(drawn), ["belady", "bucketed-lru", "lru"])
        for policy, line in drawn.items():
            self.assertEqual(matplotlib.colors.to_hex(line.get_color()).lower(),
                             style.POLICY_COLOURS[policy].lower())
        belady, lru = drawn["belady"].get_ydata(), drawn["bucketed-lru"].get_ydata()
        self.assertTrue(all(b >= l for b, l in zip(belady, lru)))  # Belady bounds LRU

    def test_dense_modes_have_no_hit_ratio(self):
        """A dense mode has no page cache: its hit ratio (written as 0 by spin) is blank, so
        that no figure or report shows it as 0; spin modes keep theirs."""
        table = data.load(A)
        dense = table.df[table.df["serving.mode"] == "dense"]
        spin_rows = table.df[table.df["serving.mode"] == "spin:shadowkv"]
        self.assertGreater(len(dense), 0)
        self.assertTrue(dense["hit_ratio"].isna().all())
        self.assertTrue((spin_rows["hit_ratio"] > 0).all())
        self.assertTrue(all(float(r["hit_ratio"]) == 0 for r in rows(A)
                            if r["serving.mode"] == "dense"))  # as spin writes it

    def test_hit_ratio_against_bucket_count_averages_seeds(self):
        """buckets: x = cache.buckets on a log axis, one line per policy, y = the mean over the
        two seeds of each point."""
        plot = figures.hit_ratio_buckets(data.load(B))
        self.check_lines(plot, rows(B), "cache.buckets", "hit_ratio", ["cache.policy"])
        self.assertEqual(plot.fig.axes[0].get_xscale(), "log")
        self.assertEqual(sorted(lines_by_label(plot.fig.axes[0])),
                         ["belady", "bucketed-lru", "lru"])

    def test_request_rate_is_the_default_x(self):
        """throughput, latency, pcie, batch: with no --x, x is the request-rate column
        trace.generator.workload.rate_rps when the sweep has it (a copy of A's results.csv
        whose buffer-ratio column is renamed so)."""
        folder = os.path.join(TMP, "rate")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(A, "results.csv")) as f:
            text = f.read()
        text = text.replace(",cache.buffer_ratio,", f",{figures.RATE},", 1)
        with open(os.path.join(folder, "results.csv"), "w") as f:
            f.write(text)
        renamed = [dict(r, **{figures.RATE: r["cache.buffer_ratio"]}) for r in rows(A)]
        table = data.load(folder)
        self.assertIn(figures.RATE, table.keys)
        plot = figures.throughput(table)
        self.assertIn("req/s", plot.fig.axes[0].get_xlabel())
        self.check_lines(plot, renamed, figures.RATE, "throughput_tokens_per_s",
                         ["serving.mode", "cache.policy"], mode_col=True)
        proc = run_in_process(cli.main, "batch", folder, "--out", os.path.join(TMP, "rate-f"))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertFiles(os.path.join(TMP, "rate-f"), "batch")

    def test_generic_line(self):
        """line: any y against any x."""
        plot = figures.generic(data.load(B), "cache.buckets", "policy.victims",
                               group="cache.policy")
        self.check_lines(plot, rows(B), "cache.buckets", "policy.victims", ["cache.policy"])


class CdfTest(Base):
    def test_cdf_of_each_point_equals_its_requests(self):
        """cdf: one curve per point; its steps are the point's sorted requests.csv values (TTFT
        in s, TPOT in ms), rising from 0 to 1 by 1/n."""
        table = data.load(A, ["cache.buffer_ratio=4", "cache.policy=lru,belady"])
        subset = [r for r in rows(A) if r["cache.buffer_ratio"] == "4"
                  and r["cache.policy"] in ("lru", "belady")]
        for metric in ("ttft", "tpot"):
            plot = figures.cdf(table, metric)
            ax = plot.fig.axes[0]
            drawn = lines_by_label(ax)
            self.assertEqual(len(drawn), len(subset))
            div = unit_of(ax.get_xlabel())
            for r in subset:
                label = f"{r['serving.mode']}, cache.policy={r['cache.policy']}"
                line = drawn[label]
                want = sorted(requests_column(A, r["folder"], f"{metric}_s"))
                xs, ys = list(line.get_xdata()), list(line.get_ydata())
                self.assertGreater(len(want), 0)
                self.assertClose([v * div for v in xs[1:]], want, label)
                self.assertClose(ys, [0.0] + [(i + 1) / len(want) for i in range(len(want))])
                self.assertColourOfMode(line, r["serving.mode"])

    def test_cdf_series_of_one_colour_differ_in_line_style_or_marker(self):
        """cdf: six points of one mode (more than the four line styles) are all distinct."""
        plot = figures.cdf(data.load(A), "ttft")
        by_colour = {}
        for line in plot.fig.axes[0].get_lines():
            key = (line.get_linestyle(), line.get_marker())
            by_colour.setdefault(matplotlib.colors.to_hex(line.get_color()), []).append(key)
        self.assertEqual(max(len(v) for v in by_colour.values()), 6)
        for styles in by_colour.values():
            self.assertEqual(len(set(styles)), len(styles), styles)

    def test_cdf_of_a_single_run_folder(self):
        """cdf: a run folder (spin sim --out) is an input too."""
        plot = figures.cdf(data.load(RUN), "ttft")
        (line,) = lines_by_label(plot.fig.axes[0]).values()
        self.assertClose(list(line.get_xdata())[1:],
                         sorted(requests_column(RUN, ".", "ttft_s")))
        self.assertEqual(line.get_label(), "dense")


class MetadataTest(Base):
    def test_bars_equal_two_level_and_flat_bytes(self):
        """metadata: per point a two-level bar and a flat bar, heights (in the label's unit)
        equal to the CSV's bytes."""
        table = data.load(A, ["cache.buffer_ratio=1"])
        subset = [r for r in rows(A) if r["cache.buffer_ratio"] == "1"]
        plot = figures.metadata(table)
        ax = plot.fig.axes[0]
        div = unit_of(ax.get_ylabel())
        self.assertIn("MiB", ax.get_ylabel())
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        self.assertEqual(len(ticks), len(subset))
        two, flat = ax.containers
        by_tick = {}
        for i, t in enumerate(ticks):
            by_tick[t] = (two[i].get_height() * div, flat[i].get_height() * div)
        for r in subset:
            label = f"{r['serving.mode']}, cache.policy={r['cache.policy']}"
            got = by_tick[label]
            self.assertClose(got, [num(r["metadata.page_table_peak_bytes"]),
                                   num(r["metadata.flat_table_bytes_at_peak"])], label)
        self.assertGreater(max(b.get_height() for b in flat), 0)


    def test_bars_of_a_replay_folder(self):
        """metadata: a `spin replay --out` folder gives its replay.json's peak_metadata_bytes."""
        import json
        plot = figures.metadata(data.load(REPLAY))
        ax = plot.fig.axes[0]
        div = unit_of(ax.get_ylabel())
        with open(os.path.join(REPLAY, "replay.json")) as f:
            meta = json.load(f)["peak_metadata_bytes"]
        two, flat = ax.containers
        self.assertClose([two[0].get_height() * div, flat[0].get_height() * div],
                         [meta["two_level"], meta["flat_page_table"]])


class RunFolderTest(Base):
    def test_replay_folders_differing_in_buffer_ratio_draw_one_hit_ratio_line(self):
        """hit-ratio: `spin replay --out` folders of three buffer ratios are read with their
        resolved configuration's keys; the key they differ in is the swept key, so they make
        one line over cache.buffer_ratio with each folder's total.hit_ratio."""
        import json
        folders, want = [], []
        for k in (4, 1, 2):
            folder = os.path.join(TMP, f"replay-k{k}")
            subprocess.run([SPIN, "replay", "--buffer-ratio", str(k), "--out", folder],
                           check=True, cwd=ROOT, capture_output=True)
            folders.append(folder)
            with open(os.path.join(folder, "replay.json")) as f:
                want.append((float(k), json.load(f)["total"]["hit_ratio"]))
        table = data.load(folders)
        self.assertEqual(table.keys, ["cache.buffer_ratio"])
        plot = figures.hit_ratio(table)
        (line,) = lines_by_label(plot.fig.axes[0]).values()
        self.assertEqual(line.get_label(), "bucketed-lru")
        self.assertClose(list(line.get_xdata()), [x for x, _ in sorted(want)])
        self.assertClose(list(line.get_ydata()), [y for _, y in sorted(want)])
        # Two runs alike in every key keep `source` to tell them apart.
        self.assertEqual(data.load([REPLAY, folders[0]]).keys[0], "source")
        # So do sim and replay runs together, whose figures differ.
        self.assertEqual(data.load([RUN, folders[1]]).keys[0], "source")

    def test_run_folders_of_two_presets_sweep_the_preset_alone(self):
        """A preset expands into many keys; the folders' swept key is the preset, not each key
        it sets, nor its free-text description and source."""
        other = os.path.join(TMP, "run-a100")
        subprocess.run([SPIN, "sim", "--mode", "dense", "--no-timeline", "--set",
                        "hardware=a100-80gb-pcie", "--out", other], check=True, cwd=ROOT,
                       capture_output=True)
        self.assertEqual(data.load([RUN, other]).keys, ["hardware.preset"])

    def test_a_summary_without_its_config_is_read_with_a_note(self):
        """spin replay --json FILE writes the figures alone: they are read, with a note that the
        configuration keys are unknown."""
        folder = os.path.join(TMP, "json-only")
        os.makedirs(folder, exist_ok=True)
        subprocess.run([SPIN, "replay", "--json", os.path.join(folder, "replay.json")],
                       check=True, cwd=ROOT, capture_output=True)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            table = data.load(os.path.join(folder, "replay.json"))
        self.assertIn("has no resolved_config.yaml beside it", err.getvalue())
        self.assertGreater(float(table.df["total.hit_ratio"].iloc[0]), 0)


class CompareTest(Base):
    def test_simulated_against_measured_matched_on_keys(self):
        """compare: each measured row is paired with the simulated row of the same swept keys
        (point numbers and key order differ); the scatter offsets are (simulated, measured)."""
        sim, measured = data.load(A), data.load(M)
        plot = figures.compare(sim, measured, metrics=["tpot_s.p50", "throughput_tokens_per_s"])
        a_rows, m_rows = rows(A), rows(M)
        keys = ["serving.mode", "cache.policy", "cache.buffer_ratio"]
        for panel, metric in enumerate(["tpot_s.p50", "throughput_tokens_per_s"]):
            ax = plot.fig.axes[panel]
            div = unit_of(ax.get_xlabel())
            got = set()
            for coll in ax.collections:
                for x, y in coll.get_offsets():
                    got.add((round(x * div, 9), round(y * div, 9)))
            want = set()
            for m in m_rows:
                (s,) = [a for a in a_rows if all(a[k] == m[k] for k in keys)]
                want.add((round(num(s[metric]), 9), round(num(m[metric]), 9)))
            self.assertEqual(got, want, metric)
            diag = [ln for ln in ax.get_lines() if ln.get_label() == "y = x"]
            self.assertEqual(len(diag), 1)
            self.assertClose(diag[0].get_xdata(), diag[0].get_ydata())
        # the kernel launch cost differs, so TPOT must too: the pairing is not trivial
        self.assertTrue(any(abs(x - y) > 1e-9 for coll in plot.fig.axes[0].collections
                            for x, y in coll.get_offsets()))


class CommandLineTest(Base):
    def test_each_subcommand_writes_png_and_pdf(self):
        """plot.py: every subcommand writes non-empty NAME.png and NAME.pdf into --out."""
        out = os.path.join(TMP, "cli")
        calls = [
            (["throughput", A, "--x", "cache.buffer_ratio"], ["throughput"]),
            (["latency", A, "--x", "cache.buffer_ratio", "--where", "cache.policy=lru"],
             ["ttft", "tpot"]),
            (["cdf", A, "--where", "cache.buffer_ratio=4"], ["cdf_ttft", "cdf_tpot"]),
            (["hit-ratio", A, "--where", "serving.mode=spin:shadowkv"], ["hit_ratio"]),
            (["buckets", B], ["hit_ratio_buckets"]),
            (["pcie", A, "--x", "cache.buffer_ratio"], ["pcie_per_token"]),
            (["batch", A, "--x", "cache.buffer_ratio", "--name", "avg_batch"], ["avg_batch"]),
            (["metadata", A], ["metadata"]),
            (["compare", A, M], ["sim_vs_measured"]),
            (["line", B, "--x", "cache.buckets", "--y", "policy.misses", "--logx"],
             ["policy.misses_vs_cache.buckets"]),
        ]
        for args, names in calls:
            proc = run_tool(PLOT, *args, "--out", out)
            self.assertEqual(proc.returncode, 0, f"{args}: {proc.stderr}")
            for name in names:
                self.assertFiles(out, name)
                self.assertIn(os.path.join(out, f"{name}.png"), proc.stdout)

    def test_same_input_same_bytes(self):
        """plot.py all: two runs write byte-identical PNG and PDF files."""
        outs = [os.path.join(TMP, f"det{i}") for i in (1, 2)]
        for out in outs:
            proc = run_tool(PLOT, "all", A, "--out", out)
            self.assertEqual(proc.returncode, 0, proc.stderr)
        names = sorted(os.listdir(outs[0]))
        self.assertIn("throughput.pdf", names)
        self.assertIn("hit_ratio.png", names)
        self.assertEqual(names, sorted(os.listdir(outs[1])))
        for n in names:
            with open(os.path.join(outs[0], n), "rb") as f1, \
                    open(os.path.join(outs[1], n), "rb") as f2:
                self.assertEqual(f1.read(), f2.read(), n)

    def test_missing_column_names_it_and_lists_the_columns(self):
        """A missing column: exit status 2, the column named, the available ones listed."""
        proc = run_tool(PLOT, "line", A, "--x", "cache.buffer_ratio", "--y", "no_such_metric",
                        "--out", os.path.join(TMP, "err"))
        self.assertEqual(proc.returncode, 2)
        self.assertIn("'no_such_metric'", proc.stderr)
        self.assertIn("available columns: point, status, error, folder", proc.stderr)
        self.assertIn("throughput_tokens_per_s", proc.stderr)
        self.assertFalse(os.path.exists(os.path.join(TMP, "err")))

    def test_no_rate_column_asks_for_x(self):
        """throughput without --x on a sweep with no request-rate column: exit 2, naming the
        rate column and the swept numeric keys to choose from."""
        proc = run_tool(PLOT, "throughput", A)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("trace.generator.workload.rate_rps", proc.stderr)
        self.assertIn("--x", proc.stderr)
        self.assertIn("swept numeric keys: cache.buffer_ratio", proc.stderr)

    def without_policy(self):
        """A's results.csv without its cache.policy column (and no sweep.yaml): rows that differ
        in a setting that is not a swept key."""
        path = os.path.join(TMP, "without-policy.csv")
        with open(os.path.join(A, "results.csv"), newline="") as f:
            reader = csv.DictReader(f)
            fields = [c for c in reader.fieldnames if c != "cache.policy"]
            table = list(reader)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore",
                                    lineterminator="\n")
            writer.writeheader()
            writer.writerows(table)
        return path

    def test_bad_inputs(self):
        """Other bad input: no such folder, a folder with no results, a bad --where, rows that
        cannot be told apart; each exit 2 with the reason."""
        cases = [
            (["cdf", os.path.join(TMP, "nowhere")], "no such file or folder"),
            (["cdf", TMP], "neither a sweep folder"),
            (["cdf", A, "--where", "cache.policy"], "expected KEY=VALUE"),
            (["cdf", A, "--where", "cache.policy=none-such"], "no ok rows"),
            (["line", self.without_policy(), "--x", "cache.buffer_ratio", "--y", "hit_ratio"],
             "share serving.mode, cache.buffer_ratio but are different runs"),
            (["line", A, "--x", "serving.mode", "--y", "hit_ratio"], "not numeric"),
            (["compare", A, M, "--on", "serving.mode"], "have the same serving.mode"),
            (["cdf", os.path.join(ROOT, "traces", "sample.spt")], "not a text file"),
        ]
        for args, message in cases:
            proc = run_in_process(cli.main, *args, "--out", os.path.join(TMP, "bad"))
            self.assertEqual(proc.returncode, 2, f"{args}: {proc.stderr}")
            self.assertIn(message, proc.stderr, args)
        # An --out that is a file: the reason, not a traceback.
        a_file = os.path.join(TMP, "a-file")
        with open(a_file, "w") as f:
            f.write("x")
        proc = run_in_process(cli.main, "cdf", A, "--out", a_file)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn(f"plot.py: error: --out {a_file}: a file is there; expected a folder",
                      proc.stderr)

    def test_help_for_every_subcommand(self):
        """--help of plot.py, of each subcommand and of report.py: exit 0, with the defaults."""
        proc = run_tool(PLOT, "--help")
        self.assertEqual(proc.returncode, 0)
        subs = ["throughput", "latency", "cdf", "hit-ratio", "buckets", "pcie", "batch",
                "metadata", "compare", "line", "all"]
        for s in subs:
            self.assertIn(s, proc.stdout)
            sub = run_in_process(cli.main, s, "--help")
            self.assertEqual(sub.returncode, 0, s)
            self.assertIn("--out", sub.stdout)
        self.assertIn("default: cache.buffer_ratio",
                      run_in_process(cli.main, "hit-ratio", "--help").stdout)
        self.assertEqual(run_in_process(cli.main, "no-such-figure", A).returncode, 2)
        proc = run_tool(REPORT, "--help")
        self.assertEqual(proc.returncode, 0)
        self.assertIn("self-contained", proc.stdout)

    def test_failed_points_are_skipped_and_reported(self):
        """A results.csv with a failed point: its row is left out of every figure (noted on
        stderr) and listed with its error in the report."""
        folder = os.path.join(TMP, "with-failed")
        shutil.copytree(A, folder)
        with open(os.path.join(folder, "results.csv")) as f:
            lines = f.read().splitlines()
        ncols = len(lines[0].split(","))
        lines.append(",".join(["12", "failed", "\"spin: error: out of memory, badly\"",
                               "points/p000012", "dense", "lru", "8"] + [""] * (ncols - 7)))
        with open(os.path.join(folder, "results.csv"), "w") as f:
            f.write("\n".join(lines) + "\n")
        table = data.load(folder, note=False)
        self.assertEqual(len(table.df), 12)
        self.assertEqual(list(table.failed["point"]), [12])
        plot = figures.throughput(table, x="cache.buffer_ratio")
        self.assertNotIn(8.0, [x for ln in plot.fig.axes[0].get_lines() for x in ln.get_xdata()])
        proc = run_tool(PLOT, "throughput", folder, "--x", "cache.buffer_ratio")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("skipping 1 failed point", proc.stderr)
        self.assertFiles(os.path.join(folder, "figures"), "throughput")
        proc = run_tool(REPORT, folder)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(os.path.join(folder, "report.html")) as f:
            page = f.read()
        self.assertIn("Failed points", page)
        self.assertIn("out of memory, badly", page)


    def test_runs_without_samples_and_unfinished_sweeps_are_noted(self):
        """A point that finished no request has its latency, throughput, batch and hit-ratio
        figures written as 0 for no samples: they are blanked, not drawn at 0. A sweep folder
        whose shard.json counts more points than results.csv holds is noted as unfinished."""
        folder = os.path.join(TMP, "without-samples")
        shutil.copytree(A, folder)
        with open(os.path.join(folder, "results.csv"), newline="") as f:
            table = list(csv.reader(f))
        header = table[0]
        for c, name in enumerate(header):
            if name == "requests_finished" or name.startswith(("ttft_s.", "throughput_")):
                table[1][c] = "0"
        with open(os.path.join(folder, "results.csv"), "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(table)
        with open(os.path.join(folder, "shard.json"), "w") as f:
            f.write('{"shard": "0/1", "sweep_points": 13}\n')
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            loaded = data.load(folder)
        self.assertIn("holds 12 of its 13 points: the sweep is unfinished", err.getvalue())
        self.assertIn("1 point(s) of", err.getvalue())
        self.assertIn("finished no request (point 0)", err.getvalue())
        row = loaded.df[loaded.df["point"] == 0].iloc[0]
        self.assertTrue(row["ttft_s.mean"] != row["ttft_s.mean"])  # NaN
        self.assertEqual(row["requests_finished"], 0)
        plot = figures.throughput(loaded, x="cache.buffer_ratio")
        drawn = [y for ln in plot.fig.axes[0].get_lines() for y in ln.get_ydata()]
        self.assertNotIn(0.0, drawn)
        # A complete sweep: no note.
        with open(os.path.join(folder, "shard.json"), "w") as f:
            f.write('{"shard": "0/1", "sweep_points": 12}\n')
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            data.load(folder)
        self.assertNotIn("unfinished", err.getvalue())


class RealSweepTest(Base):
    def test_fixture_equals_spin_sweep(self):
        """The fixture is the contract: `spin sweep` over the same grid writes the same
        results.csv, cell for cell, and the figures read it alike (skipped where this spin has
        no sweep command)."""
        probe = subprocess.run([SPIN, "sweep", "--help"], capture_output=True, text=True)
        if probe.returncode != 0:
            self.skipTest("this spin binary has no sweep command")
        folder = os.path.join(TMP, "real")
        sweep_file = os.path.join(TMP, "real.yaml")
        with open(sweep_file, "w") as f:
            f.write(fixture.sweep_yaml(GRID_A, None, ()))
        proc = subprocess.run([SPIN, "sweep", sweep_file, "--out", folder], cwd=ROOT,
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(os.path.join(A, "results.csv")) as f1, \
                open(os.path.join(folder, "results.csv")) as f2:
            self.assertEqual(f1.readline(), f2.readline())  # the header
        self.assertEqual(rows(folder), rows(A))
        plot = figures.hit_ratio(data.load(folder, ["serving.mode=spin:shadowkv"]))
        want = figures.hit_ratio(data.load(A, ["serving.mode=spin:shadowkv"]))
        for label, line in lines_by_label(want.fig.axes[0]).items():
            got = lines_by_label(plot.fig.axes[0])[label]
            self.assertClose(got.get_ydata(), line.get_ydata(), label)


class ReportTest(Base):
    def test_one_self_contained_page(self):
        """report.py: one HTML file; every figure embedded as a base64 PNG (no external
        resource), the summary table holding every point's numbers, the sweep file; the same
        bytes when run twice."""
        out = os.path.join(TMP, "report.html")
        proc = run_tool(REPORT, A, "--out", out)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(out) as f:
            page = f.read()
        images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
        names = [n for n, _ in images]
        for n in ("throughput", "ttft", "tpot", "pcie_per_token", "batch", "cdf_ttft",
                  "cdf_tpot", "hit_ratio", "metadata"):
            self.assertIn(n, names)
        for _, b64 in images:
            png = base64.b64decode(b64)
            self.assertEqual(png[:4], b"\x89PNG")
            self.assertGreater(len(png), 2000)
        self.assertNotRegex(page, r'(src|href)="(?!data:)')
        self.assertIn("hit_ratio_buckets", page)  # listed as not drawn, with the reason
        summary = page[page.index("<h2>Summary</h2>"):page.index("<details>")]
        for r in rows(A):
            self.assertIn(f"<td class=\"\">{r['point']}</td>", summary)
            self.assertIn(f"{num(r['throughput_tokens_per_s']):.4g}", summary)
            self.assertIn(f"{num(r['tpot_s.p50']) * 1e3:.4g}", summary)
        self.assertIn("cache.buffer_ratio: [1, 4]", page)  # the sweep file
        out2 = os.path.join(TMP, "report2.html")
        self.assertEqual(run_tool(REPORT, A, "--out", out2).returncode, 0)
        with open(out2) as f:
            self.assertEqual(f.read(), page)

    def test_report_of_a_run_folder(self):
        """report.py on a run folder: the CDFs and metadata, the rate figures listed as not
        drawn."""
        text, plots = report_mod.build_report(data.load(RUN), "run")
        self.assertEqual(sorted(p.name for p in plots), ["cdf_tpot", "cdf_ttft", "metadata"])
        self.assertIn("no request-rate column", text)


if __name__ == "__main__":
    sys.exit(spin_unittest.main("analysis", sys.modules[__name__]))
