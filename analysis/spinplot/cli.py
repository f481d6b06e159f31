"""analysis/plot.py: the standard figures of a serving study from spin's sweep folders and run
folders (docs/analysis.md). Each figure is written as NAME.png and NAME.pdf into --out."""
import argparse
import os
import sys

from . import data, figures, style
from .data import AnalysisError

FORMATS = ("png", "pdf")


def default_out(inputs):
    first = inputs[0]
    if os.path.isdir(first):
        return os.path.join(first, "figures")
    return os.path.join(os.path.dirname(os.path.abspath(first)), "figures")


def add_common(p, inputs="+"):
    if inputs:
        p.add_argument("inputs", nargs=inputs, metavar="INPUT",
                       help="a sweep folder (with results.csv), a results.csv file, or a run "
                            "folder (spin sim --out DIR: summary.json, requests.csv); several "
                            "are combined, told apart by a column 'source'")
    p.add_argument("--out", metavar="DIR",
                   help="folder for NAME.png and NAME.pdf (default: INPUT/figures)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE[,VALUE...]",
                   help="keep only the rows whose column KEY has one of the values "
                        "(text or numeric equality); repeatable, all must hold")
    p.add_argument("--format", default="png,pdf",
                   help="comma-separated file formats (default: png,pdf)")
    p.add_argument("--name", help="file name without extension (default: the figure's name)")
    p.add_argument("--title", help="a title over the figure (default: none)")


def add_lines(p, x_default, group_default, y_default=None, logx=False):
    p.add_argument("--x", metavar="COLUMN", help=f"x column (default: {x_default})")
    p.add_argument("--group", metavar="COLUMN",
                   help=f"column that colours the lines, or 'none' (default: {group_default}). "
                        "Other swept keys that vary split the lines further (line style); "
                        "rows that differ only in `seed` are averaged")
    if y_default:
        p.add_argument("--y", metavar="COLUMN", help=f"y column (default: {y_default})")
    p.add_argument("--logx", action="store_true", default=None,
                   help="logarithmic x axis" + (" (default for this figure)" if logx else ""))
    p.add_argument("--linx", dest="logx", action="store_false", help="linear x axis")
    p.add_argument("--logy", action="store_true", help="logarithmic y axis")


RATE_DEFAULT = f"{figures.RATE} (a sweep over the request rate); else give --x"
MODE_DEFAULT = "serving.mode if swept, else the summary's mode"
POLICY_DEFAULT = "cache.policy, else the mode"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="plot.py",
        description="Figures of a serving study from spin's sweep folders (results.csv, "
                    "docs/sweeps.md) and run folders (spin sim --out): each written as NAME.png "
                    "and NAME.pdf. docs/analysis.md explains each figure.")
    sub = parser.add_subparsers(dest="command", metavar="FIGURE")
    sub.required = True

    p = sub.add_parser("throughput", help="throughput against the request rate, per mode",
                       description="Output-token throughput (y) against the request rate (x), "
                                   "one line per serving mode. Writes throughput.png/.pdf.")
    add_common(p)
    add_lines(p, RATE_DEFAULT, MODE_DEFAULT, "throughput_tokens_per_s")

    p = sub.add_parser("latency", help="TTFT and TPOT percentiles against the request rate",
                       description="TTFT and TPOT percentiles (one panel each of p50, p90, p99) "
                                   "against the request rate, one line per mode. Writes "
                                   "ttft.png/.pdf and tpot.png/.pdf.")
    add_common(p)
    add_lines(p, RATE_DEFAULT, MODE_DEFAULT)
    p.add_argument("--metric", choices=("ttft", "tpot", "both"), default="both",
                   help="which latency (default: both)")
    p.add_argument("--percentiles", default="p50,p90,p99",
                   help="comma-separated statistics of summary.json: mean, p50, p90, p99, max "
                        "(default: p50,p90,p99)")

    p = sub.add_parser("cdf", help="CDFs of per-request TTFT and TPOT",
                       description="Empirical CDFs of TTFT and TPOT over the requests of each "
                                   "point (its requests.csv; rejected requests left out), one "
                                   "curve per point. Writes cdf_ttft.png/.pdf and "
                                   "cdf_tpot.png/.pdf. Use --where to pick the points.")
    add_common(p)
    p.add_argument("--metric", choices=("ttft", "tpot", "both"), default="both",
                   help="which latency (default: both)")
    p.add_argument("--group", metavar="COLUMN", help=f"colour column (default: {MODE_DEFAULT})")
    p.add_argument("--logx", action="store_true", help="logarithmic x axis")

    p = sub.add_parser("hit-ratio", help="hit ratio against the buffer ratio, per policy",
                       description="Cache hit ratio against the buffer ratio k, one line per "
                                   "cache policy (Belady, exact LRU, bucketed LRU, ... when the "
                                   "sweep has them). Writes hit_ratio.png/.pdf.")
    add_common(p)
    add_lines(p, "cache.buffer_ratio", POLICY_DEFAULT, "hit_ratio (sim) or total.hit_ratio "
              "(replay)")

    p = sub.add_parser("buckets", help="hit ratio against the bucket count, per policy",
                       description="Cache hit ratio against the bucketed-LRU bucket count B "
                                   "(log2 axis), one line per cache policy. Writes "
                                   "hit_ratio_buckets.png/.pdf.")
    add_common(p)
    add_lines(p, "cache.buckets", POLICY_DEFAULT, "hit_ratio (sim) or total.hit_ratio (replay)",
              logx=True)

    p = sub.add_parser("pcie", help="PCIe bytes per output token against the request rate",
                       description="Host-to-HBM PCIe bytes per output token against the request "
                                   "rate, one line per mode. Writes pcie_per_token.png/.pdf.")
    add_common(p)
    add_lines(p, RATE_DEFAULT, MODE_DEFAULT, "h2d_bytes_per_output_token")

    p = sub.add_parser("batch", help="average batch size against the request rate",
                       description="Average decode batch size (weighted by iteration time) "
                                   "against the request rate, one line per mode. Writes "
                                   "batch.png/.pdf.")
    add_common(p)
    add_lines(p, RATE_DEFAULT, MODE_DEFAULT, "batch_mean")

    p = sub.add_parser("metadata", help="page-table metadata: two-level vs flat",
                       description="Bars per point: two-level page-table metadata at its peak "
                                   "next to a flat table for the same requests "
                                   f"({figures.TWO_LEVEL} and {figures.FLAT}; of replay: "
                                   f"{figures.REPLAY_TWO_LEVEL} and {figures.REPLAY_FLAT}), "
                                   "with the ratio. "
                                   "Writes metadata.png/.pdf.")
    add_common(p)
    p.add_argument("--group", metavar="COLUMN", help=f"label column (default: {MODE_DEFAULT})")
    p.add_argument("--logy", action="store_true", help="logarithmic y axis")

    p = sub.add_parser("compare", help="simulated against measured, with y = x",
                       description="Matching metrics of a simulated and a measured sweep (same "
                                   "schema; the executor writes the measured one) against each "
                                   "other, one panel per metric, with the y = x line. Rows are "
                                   "matched on the swept keys both have (or --on). Writes "
                                   "sim_vs_measured.png/.pdf.")
    p.add_argument("simulated", help="simulated sweep folder, results.csv or run folder")
    p.add_argument("measured", help="measured sweep folder, results.csv or run folder")
    add_common(p, inputs=None)  # --where: applied to each table that has the column
    p.add_argument("--metrics", help="comma-separated columns (default: those of "
                   + ", ".join(figures.COMPARE_METRICS) + " that both have)")
    p.add_argument("--on", help="comma-separated columns to match rows on (default: the swept "
                   "keys both have)")
    p.add_argument("--group", metavar="COLUMN", help=f"colour column (default: {MODE_DEFAULT})")

    p = sub.add_parser("line", help="any column against any column",
                       description="The general figure: --y against --x, one line per group "
                                   "(and per other varying swept key). Writes Y_vs_X.png/.pdf.")
    add_common(p)
    p.add_argument("--x", metavar="COLUMN", required=True, help="x column")
    p.add_argument("--y", metavar="COLUMN", required=True, help="y column")
    p.add_argument("--group", metavar="COLUMN", help=f"colour column, or 'none' (default: "
                   f"{MODE_DEFAULT})")
    p.add_argument("--logx", action="store_true", help="logarithmic x axis")
    p.add_argument("--logy", action="store_true", help="logarithmic y axis")

    p = sub.add_parser("all", help="every standard figure the input has the columns for",
                       description="Every standard figure whose columns the input has; the "
                                   "others are listed with the reason. The x of the rate "
                                   "figures: --x, else the request rate, else the first swept "
                                   "numeric key that varies.")
    add_common(p)
    p.add_argument("--x", metavar="COLUMN", help="x of the throughput, latency, PCIe and batch "
                   "figures (default: the request rate, else the first varying swept number)")
    p.add_argument("--group", metavar="COLUMN", help=f"colour column (default: {MODE_DEFAULT})")
    return parser


def standard_plots(table, x=None, group=None, title=None):
    """Every standard figure the table allows: (list of Plot, list of (name, reason) skipped)."""
    plots, skipped = [], []
    rate_x = None
    try:
        rate_x = figures.resolve_x(table, x, auto=True)
    except AnalysisError:
        skipped.append(("throughput, ttft, tpot, pcie_per_token, batch",
                        f"no request-rate column ({figures.RATE}) and no swept numeric key "
                        "that varies; name an x with --x"))
    attempts = []
    if rate_x:
        attempts += [
            ("throughput", lambda: figures.throughput(table, rate_x, group, title=title)),
            ("ttft", lambda: figures.latency(table, "ttft", rate_x, group, title=title)),
            ("tpot", lambda: figures.latency(table, "tpot", rate_x, group, title=title)),
            ("pcie_per_token", lambda: figures.pcie(table, rate_x, group, title=title)),
            ("batch", lambda: figures.batch(table, rate_x, group, title=title)),
        ]
    attempts += [
        ("cdf_ttft", lambda: figures.cdf(table, "ttft", group, title=title)),
        ("cdf_tpot", lambda: figures.cdf(table, "tpot", group, title=title)),
    ]
    if "cache.buffer_ratio" in table.keys and table.df["cache.buffer_ratio"].nunique() > 1:
        attempts.append(("hit_ratio", lambda: figures.hit_ratio(table, title=title)))
    else:
        skipped.append(("hit_ratio", "cache.buffer_ratio is not a swept key with several values"))
    if "cache.buckets" in table.keys and table.df["cache.buckets"].nunique() > 1:
        attempts.append(("hit_ratio_buckets", lambda: figures.hit_ratio_buckets(table,
                                                                                 title=title)))
    else:
        skipped.append(("hit_ratio_buckets", "cache.buckets is not a swept key with several "
                                             "values"))
    attempts.append(("metadata", lambda: figures.metadata(table, group, title=title)))
    for name, make in attempts:
        try:
            plots.append(make())
        except AnalysisError as e:
            skipped.append((name, str(e)))
    return plots, skipped


def _formats(text):
    fmts = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in fmts if f not in ("png", "pdf", "svg")]
    if bad or not fmts:
        raise AnalysisError(f"--format {text}: formats are png, pdf, svg")
    return fmts


def run(args):
    fmts = _formats(args.format)
    if args.command == "compare":
        sim = data.load([args.simulated])
        measured = data.load([args.measured])
        # each --where applies to the tables that have its column (one of them must)
        for clause in args.where:
            key = clause.partition("=")[0]
            have = [t for t in (sim, measured) if key in t.df.columns]
            if not have:
                sim.require(key, "--where column")
            if key in sim.df.columns:
                sim = data.apply_where(sim, [clause])
            if key in measured.df.columns:
                measured = data.apply_where(measured, [clause])
        for t in (sim, measured):
            if t.df.empty:
                raise AnalysisError(f"no rows of {t.description} after --where "
                                    + " ".join(args.where))
        out = args.out or default_out([args.simulated])
        plots = [figures.compare(sim, measured, metrics=args.metrics and args.metrics.split(","),
                                 on=args.on and args.on.split(","), group=args.group,
                                 name=args.name, title=args.title)]
    else:
        table = data.load(args.inputs, args.where)
        out = args.out or default_out(args.inputs)
        c = args.command
        common = dict(title=args.title)
        if getattr(args, "logx", None) is not None:
            common["logx"] = args.logx
        if getattr(args, "logy", False):
            common["logy"] = True
        if c in ("throughput", "pcie", "batch", "hit-ratio", "buckets"):
            fn = {"throughput": figures.throughput, "pcie": figures.pcie, "batch": figures.batch,
                  "hit-ratio": figures.hit_ratio, "buckets": figures.hit_ratio_buckets}[c]
            kw = dict(common, name=args.name)
            if args.y:
                kw["y"] = args.y
            plots = [fn(table, args.x, args.group, **kw)]
        elif c == "latency":
            metrics = ("ttft", "tpot") if args.metric == "both" else (args.metric,)
            pcts = [p.strip() for p in args.percentiles.split(",") if p.strip()]
            plots = [figures.latency(table, m, args.x, args.group, percentiles=pcts,
                                     name=args.name and (args.name if len(metrics) == 1
                                                         else f"{args.name}_{m}"), **common)
                     for m in metrics]
        elif c == "cdf":
            metrics = ("ttft", "tpot") if args.metric == "both" else (args.metric,)
            plots = [figures.cdf(table, m, args.group, name=args.name and (
                args.name if len(metrics) == 1 else f"{args.name}_{m}"), **common)
                for m in metrics]
        elif c == "metadata":
            plots = [figures.metadata(table, args.group, name=args.name, **common)]
        elif c == "line":
            plots = [figures.generic(table, args.x, args.y, args.group, name=args.name,
                                     **common)]
        elif c == "all":
            plots, skipped = standard_plots(table, args.x, args.group, args.title)
            for name, why in skipped:
                print(f"note: no {name}: {why}", file=sys.stderr)
            if not plots:
                raise AnalysisError("no standard figure can be drawn from "
                                    + table.description)
        else:  # pragma: no cover - argparse rejects unknown commands
            raise AnalysisError(f"unknown figure {c}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise AnalysisError(f"--out {out}: a file is there; expected a folder for the figures")
    written = []
    for plot in plots:
        written += style.save(plot.fig, out, plot.name, fmts)
        style.close(plot.fig)
    for path in written:
        print(path)
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except AnalysisError as e:
        print(f"plot.py: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an --out that is a file, a folder that cannot be made
        print(f"plot.py: error: {e}", file=sys.stderr)
        return 2
