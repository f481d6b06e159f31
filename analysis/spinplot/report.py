"""analysis/report.py: one self-contained HTML page (figures embedded as base64 PNG, inline CSS,
no external resources) with the standard figures and the summary tables of a sweep or runs."""
import argparse
import base64
import html
import os
import sys

from . import data, style
from .cli import standard_plots
from .data import AnalysisError

CAPTIONS = {
    "throughput": "Output-token throughput per serving mode.",
    "ttft": "Time to first token: percentiles per mode.",
    "tpot": "Time per output token: percentiles per mode.",
    "pcie_per_token": "Host-to-HBM PCIe bytes per output token.",
    "batch": "Average decode batch size (weighted by iteration time).",
    "cdf_ttft": "CDF of per-request TTFT, one curve per point (rejected requests left out).",
    "cdf_tpot": "CDF of per-request TPOT, one curve per point (rejected requests left out).",
    "hit_ratio": "Cache hit ratio against the buffer ratio, per cache policy.",
    "hit_ratio_buckets": "Cache hit ratio against the bucket count, per cache policy.",
    "metadata": "Two-level page-table metadata at its peak vs a flat table for the same "
                "requests.",
}
# The summary table: these metrics (when present) after the swept keys.
SUMMARY_METRICS = [
    ("mode", "mode", 1),
    ("requests_finished", "finished", 1),
    ("requests_rejected", "rejected", 1),
    ("throughput_tokens_per_s", "throughput (tok/s)", 1),
    ("ttft_s.p50", "TTFT p50 (s)", 1),
    ("ttft_s.p99", "TTFT p99 (s)", 1),
    ("tpot_s.p50", "TPOT p50 (ms)", 1e-3),
    ("tpot_s.p99", "TPOT p99 (ms)", 1e-3),
    ("batch_mean", "batch mean", 1),
    ("preemptions", "preemptions", 1),
    ("hit_ratio", "hit ratio", 1),
    ("total.hit_ratio", "hit ratio", 1),
    ("h2d_bytes_per_output_token", "H2D per token (KiB)", 1024),
    ("hbm.kv_used_peak_bytes", "peak KV (GiB)", 1024 ** 3),
    ("metadata.page_table_peak_bytes", "two-level metadata (MiB)", 1024 ** 2),
    ("metadata.flat_table_bytes_at_peak", "flat metadata (MiB)", 1024 ** 2),
]

REPORT_DPI = 150
CSS = """
body { font-family: 'DejaVu Sans', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
figure { display: inline-block; margin: 0.5em 1em 1.5em 0; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; max-width: 560px; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #666; font-size: 0.85em; }
.scroll { overflow-x: auto; }
"""


def cell(value, divisor=1):
    if isinstance(value, str):
        return html.escape(value), True
    try:
        v = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value)), True
    if v != v:
        return "", False
    v = v / divisor
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v)), False
    return f"{v:.4g}", False


def table_html(df, columns):
    """columns: list of (column, heading, divisor)."""
    out = ['<div class="scroll"><table><thead><tr>']
    for c, head, _ in columns:
        text = isinstance(df[c].iloc[0], str) if len(df) else False
        out.append(f'<th class="{"text" if text else ""}">{html.escape(head)}</th>')
    out.append("</tr></thead><tbody>")
    for _, row in df.iterrows():
        out.append("<tr>")
        for c, _, div in columns:
            text, is_text = cell(row[c], div)
            out.append(f'<td class="{"text" if is_text else ""}">{text}</td>')
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def build_report(table, title, x=None, group=None, sweep_file=None, figures_dir=None):
    """The HTML text, and the Plots drawn (closed)."""
    plots, skipped = standard_plots(table, x, group)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f'<p class="note">From {html.escape(table.description)}: {len(table.df)} ok '
             f'point(s), {len(table.failed)} failed. Swept keys: '
             f'{html.escape(", ".join(table.keys) or "none")}. Written by analysis/report.py '
             "(docs/analysis.md).</p>"]
    parts.append("<h2>Figures</h2>")
    drawn = []
    for plot in plots:
        png = style.png_bytes(plot.fig, dpi=REPORT_DPI)
        if figures_dir:
            style.save(plot.fig, figures_dir, plot.name)
        style.close(plot.fig)
        drawn.append(plot)
        b64 = base64.b64encode(png).decode("ascii")
        caption = CAPTIONS.get(plot.name, plot.name)
        parts.append(f'<figure id="{plot.name}"><img alt="{plot.name}" '
                     f'src="data:image/png;base64,{b64}"><figcaption><b>{plot.name}</b>: '
                     f"{html.escape(caption)}</figcaption></figure>")
    if skipped:
        parts.append('<p class="note">Not drawn:</p><ul class="note">')
        for name, why in skipped:
            parts.append(f"<li><b>{html.escape(name)}</b>: {html.escape(why)}</li>")
        parts.append("</ul>")

    df = table.df
    parts.append("<h2>Summary</h2>")
    key_cols = [("point", "point", 1)] + [(k, k, 1) for k in table.keys]
    seen = set()
    metric_cols = []
    for c, head, div in SUMMARY_METRICS:
        if c in df.columns and head not in seen:
            metric_cols.append((c, head, div))
            seen.add(head)
    parts.append(table_html(df, key_cols + metric_cols))
    parts.append("<details><summary>All columns</summary>")
    parts.append(table_html(df, [(c, c, 1) for c in table.columns()
                                 if c not in ("status", "error")]))
    parts.append("</details>")
    if len(table.failed):
        parts.append("<h2>Failed points</h2>")
        parts.append(table_html(table.failed, [("point", "point", 1), ("folder", "folder", 1),
                                               ("error", "error", 1)]))
    if sweep_file and os.path.isfile(sweep_file):
        with open(sweep_file) as f:
            parts.append("<h2>Sweep file</h2><pre>" + html.escape(f.read()) + "</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts), drawn


def build_parser():
    p = argparse.ArgumentParser(
        prog="report.py",
        description="One self-contained HTML page (figures embedded as PNG) with the standard "
                    "figures and the summary tables of a sweep folder, a results.csv or run "
                    "folders (docs/analysis.md).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a sweep folder (results.csv), a results.csv file, or a run folder; "
                        "several are combined (column 'source')")
    p.add_argument("--out", metavar="FILE",
                   help="the HTML file (default: INPUT/report.html, or report.html beside a "
                        "results.csv)")
    p.add_argument("--title", help="page title (default: 'spin: ' and the input's name)")
    p.add_argument("--x", metavar="COLUMN",
                   help="x of the throughput, latency, PCIe and batch figures (default: "
                        "trace.generator.workload.rate_rps, else the first varying swept number)")
    p.add_argument("--group", metavar="COLUMN",
                   help="colour column (default: serving.mode if swept, else mode)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE[,VALUE...]",
                   help="keep only the rows whose column KEY has one of the values; repeatable")
    p.add_argument("--figures", metavar="DIR",
                   help="also write each figure as NAME.png and NAME.pdf into DIR")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        table = data.load(args.inputs, args.where)
        first = args.inputs[0]
        base = first if os.path.isdir(first) else os.path.dirname(os.path.abspath(first))
        out = args.out or os.path.join(base, "report.html")
        title = args.title or "spin: " + os.path.basename(os.path.normpath(
            first if os.path.isdir(first) else base))
        sweep_file = os.path.join(base, "sweep.yaml") if len(args.inputs) == 1 else None
        text, _ = build_report(table, title, args.x, args.group, sweep_file, args.figures)
    except AnalysisError as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2
    tmp = out + ".tmp"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, out)
    except OSError as e:  # an --out in a folder that cannot be made or written
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0
