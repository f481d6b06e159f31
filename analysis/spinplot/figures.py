"""One function per figure. Each takes a Table (spinplot.data) and options and returns a Plot:
the matplotlib Figure, its file name, and what it drew (series with the plotted x and y, in the
axis units, and the divisors from column units to axis units), so callers and tests can check the
drawing against the table."""
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd

from . import data, style
from .data import AnalysisError

RATE = "trace.generator.workload.rate_rps"
PERCENTILES = ("p50", "p90", "p99")


class Plot:
    def __init__(self, name, fig, series, notes=()):
        self.name = name
        self.fig = fig
        self.series = series  # list of dicts: label, panel, x, y, artist, x_div, y_div, ...
        self.notes = list(notes)


def resolve_x(table, x, auto=False):
    """The x column: `x` if given; else the request rate; else (auto) the first swept numeric
    key that varies."""
    if x:
        return table.require(x, "x column")
    if RATE in table.df.columns:
        return RATE
    numeric = [k for k in table.numeric_keys() if k in table.varying_keys() and k != "seed"]
    if auto and numeric:
        return numeric[0]
    raise AnalysisError(
        f"no x column: '{RATE}' is not in {table.description}; choose one with --x "
        f"(swept numeric keys: {', '.join(numeric) or 'none'}; columns: "
        + ", ".join(table.columns()) + ")")


def resolve_group(table, group, preferred=("serving.mode", "mode")):
    """The column that colours the series: `group` if given (or none for 'none'), else the first
    of `preferred` that is a column."""
    if group == "none":
        return None
    if group:
        return table.require(group, "--group column")
    for c in preferred:
        if c in table.df.columns:
            return c
    return None


def _ordered(series, primary):
    def key(s):
        return tuple(style.sort_key(c, s["values"][c]) for c in s["columns"])
    return sorted(series, key=key)


def _legend(ax, n):
    """Inside the axes for a few entries; below them, in columns, for many (the saved file's
    tight bounding box grows to hold it)."""
    if n == 0:
        return
    if n > 6:
        handles, labels = ax.get_legend_handles_labels()
        ax.figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                         ncol=2 if n <= 24 else 3, borderaxespad=0)
    else:
        ax.legend(loc="best")


def _set_log(ax, logx, logy, x_values=()):
    if logx:
        xs = [v for v in x_values if v > 0]
        # powers of two (bucket counts, segment sizes) read best in base 2
        base = 2 if xs and all(float(v).is_integer() and (int(v) & (int(v) - 1)) == 0
                               for v in xs) else 10
        ax.set_xscale("log", base=base)
        if base == 2:
            ax.set_xticks(sorted(set(xs)))
            ax.get_xaxis().set_major_formatter(mticker.ScalarFormatter())
            ax.minorticks_off()
    if logy:
        ax.set_yscale("log")


def lines(table, name, x, ys, group, titles=None, logx=False, logy=False, ylim=None,
          title=None):
    """The general line figure: one panel per y column, one line per series (split by the group
    column and every other varying swept key; seeds averaged)."""
    table.require(x, "x column")
    for y in ys:
        table.require(y, "y column")
    panels = len(ys)
    with style.style_context():
        fig, axes = style.new_figure(ncols=panels, sharey=panels > 1)
        palette = style.Palette(group)
        styles = {}
        drawn = []
        xlabel, x_div = style.axis_label(x, table.df[x].dropna())
        all_y = pd.concat([table.df[y] for y in ys]).dropna()
        base = ys[0].split(".")[0]
        ylabel, y_div = style.axis_label(
            base if titles and base in ("ttft_s", "tpot_s") else ys[0], all_y)
        for i, (ax, y) in enumerate(zip(axes, ys)):
            try:
                series = _ordered(data.line_series(table, x, y, group), group)
            except AnalysisError:
                style.close(fig)
                raise
            if not series:
                style.close(fig)
                raise AnalysisError(f"nothing to plot: no row has both {x} and {y}")
            for s in series:
                if s["label"] not in styles:
                    styles[s["label"]] = palette.style(s["primary"] if group else s["label"])
                colour, ls, marker = styles[s["label"]]
                px, py = s["x"] / x_div, s["y"] / y_div
                (artist,) = ax.plot(px, py, color=colour, linestyle=ls, marker=marker,
                                    label=s["label"])
                drawn.append(dict(s, panel=i, x=px, y=py, artist=artist, x_div=x_div,
                                  y_div=y_div, x_column=x, y_column=y))
            ax.set_xlabel(xlabel)
            if i == 0:
                ax.set_ylabel(ylabel)
            if titles:
                ax.set_title(titles[i])
            _set_log(ax, logx, logy, [v / x_div for v in table.df[x].dropna().tolist()])
            if ylim:
                ax.set_ylim(*ylim)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        _legend(axes[-1], len([s for s in drawn if s["panel"] == panels - 1]))
    return Plot(name, fig, drawn)


def throughput(table, x=None, group=None, y="throughput_tokens_per_s", **kw):
    x = resolve_x(table, x, kw.pop("auto_x", False))
    return lines(table, kw.pop("name", None) or "throughput", x, [y],
                 resolve_group(table, group), **kw)


def latency(table, metric, x=None, group=None, percentiles=PERCENTILES, **kw):
    """TTFT or TPOT percentiles against x: one panel per percentile."""
    x = resolve_x(table, x, kw.pop("auto_x", False))
    ys = [f"{metric}_s.{p}" for p in percentiles]
    for y in ys:
        table.require(y, f"{metric.upper()} column")
    return lines(table, kw.pop("name", None) or metric, x, ys, resolve_group(table, group),
                 titles=[f"{metric.upper()} {p}" for p in percentiles], **kw)


def pcie(table, x=None, group=None, y="h2d_bytes_per_output_token", **kw):
    x = resolve_x(table, x, kw.pop("auto_x", False))
    return lines(table, kw.pop("name", None) or "pcie_per_token", x, [y],
                 resolve_group(table, group), **kw)


def batch(table, x=None, group=None, y="batch_mean", **kw):
    x = resolve_x(table, x, kw.pop("auto_x", False))
    return lines(table, kw.pop("name", None) or "batch", x, [y], resolve_group(table, group),
                 **kw)


def hit_ratio(table, x=None, group=None, y=None, **kw):
    """Hit ratio against the buffer ratio, one line per cache policy."""
    kw.pop("auto_x", None)
    x = table.require(x or "cache.buffer_ratio", "x column")
    y = table.require(y) if y else table.first_present(["hit_ratio", "total.hit_ratio"],
                                                       "hit ratio")
    g = resolve_group(table, group, ("cache.policy", "policy", "serving.mode", "mode"))
    kw.setdefault("ylim", None)
    return lines(table, kw.pop("name", None) or "hit_ratio", x, [y], g, **kw)


def hit_ratio_buckets(table, x=None, group=None, y=None, **kw):
    """Hit ratio against the bucket count (log2 axis), one line per cache policy."""
    kw.pop("auto_x", None)
    x = table.require(x or "cache.buckets", "x column")
    y = table.require(y) if y else table.first_present(["hit_ratio", "total.hit_ratio"],
                                                       "hit ratio")
    g = resolve_group(table, group, ("cache.policy", "policy", "serving.mode", "mode"))
    kw.setdefault("logx", True)
    return lines(table, kw.pop("name", None) or "hit_ratio_buckets", x, [y], g, **kw)


def generic(table, x, y, group=None, **kw):
    kw.pop("auto_x", None)
    x = resolve_x(table, x)
    name = kw.pop("name", None) or f"{y}_vs_{x}".replace("/", "_")
    return lines(table, name, x, [table.require(y, "y column")], resolve_group(table, group), **kw)


def _row_order(table, group):
    df = table.df
    cols = data.split_columns(table, group)
    if "seed" in table.varying_keys():
        cols.append("seed")
    order = sorted(range(len(df)), key=lambda i: tuple(
        style.sort_key(c, df.iloc[i][c]) for c in cols))
    return [df.iloc[i] for i in order]


def cdf(table, metric, group=None, name=None, logx=False, title=None, **_):
    """Empirical CDF of a per-request metric (ttft_s or tpot_s of requests.csv, rejected requests
    left out): one curve per point."""
    column = f"{metric}_s"
    group = resolve_group(table, group)
    rows = _row_order(table, group)
    values = [data.read_requests(table, r, column) for r in rows]
    with style.style_context():
        fig, (ax,) = style.new_figure()
        xlabel, div = style.axis_label(column, np.concatenate(values) if values else [])
        palette = style.Palette(group)
        drawn = []
        for row, vals in zip(rows, values):
            label, primary = data.row_label(table, row, group)
            colour, ls, mk = palette.style(primary if group else label)
            v = np.sort(vals) / div
            frac = np.arange(1, len(v) + 1) / max(len(v), 1)
            # the step up from 0 at the smallest value, then one step per request
            px = np.concatenate([v[:1], v])
            py = np.concatenate([[0.0] if len(v) else [], frac])
            # Past the line styles, series of one colour are told apart by a few markers.
            marks = {}
            if palette.used[colour] > len(style.LINESTYLES):
                marks = dict(marker=mk, markevery=max(1, len(px) // 6), markersize=4)
            (artist,) = ax.plot(px, py, drawstyle="steps-post", color=colour, linestyle=ls,
                                label=label, **marks)
            drawn.append(dict(label=label, panel=0, x=px, y=py, artist=artist, x_div=div,
                              y_div=1.0, point=int(row["point"]), n=len(v)))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Fraction of requests")
        ax.set_ylim(0, 1.02)
        if logx:
            ax.set_xscale("log")
        if title:
            ax.set_title(title)
        fig.tight_layout()
        _legend(ax, len(drawn))
    return Plot(name or f"cdf_{metric}", fig, drawn)


TWO_LEVEL = "metadata.page_table_peak_bytes"
FLAT = "metadata.flat_table_bytes_at_peak"
# the same two numbers in replay.json (spin replay: one request's peak)
REPLAY_TWO_LEVEL = "peak_metadata_bytes.two_level"
REPLAY_FLAT = "peak_metadata_bytes.flat_page_table"


def metadata(table, group=None, name=None, logy=False, title=None, **_):
    """Bars: two-level page-table metadata at its peak next to a flat table for the same
    requests, per point."""
    two_col = table.first_present([TWO_LEVEL, REPLAY_TWO_LEVEL], "two-level metadata")
    flat_col = table.first_present([FLAT, REPLAY_FLAT], "flat metadata")
    group = resolve_group(table, group, ("serving.mode", "mode", "cache.policy", "policy"))
    rows = _row_order(table, group)
    two = np.array([float(r[two_col]) for r in rows])
    flat = np.array([float(r[flat_col]) for r in rows])
    labels = [data.row_label(table, r, group)[0] for r in rows]
    with style.style_context():
        width = max(5.0, 0.55 * len(rows) + 1.5)
        fig, (ax,) = style.new_figure(width=width)
        ylabel, div = style.axis_label(TWO_LEVEL, np.concatenate([two, flat]))
        ylabel = "Page tables at peak" + ylabel[ylabel.rfind(" ("):]
        pos = np.arange(len(rows))
        w = 0.38
        bars_two = ax.bar(pos - w / 2, two / div, w, color=style.METADATA_COLOURS["two-level"],
                          label="two-level (peak)")
        bars_flat = ax.bar(pos + w / 2, flat / div, w, color=style.METADATA_COLOURS["flat"],
                           label="flat table (same requests)")
        for p, t, f in zip(pos, two, flat):
            if t > 0:
                ax.annotate(f"×{f / t:.1f}", (p, max(t, f) / div), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(pos)
        ax.set_xticklabels(labels, rotation=30 if len(rows) > 2 else 0,
                           ha="right" if len(rows) > 2 else "center")
        ax.set_ylabel(ylabel)
        ax.grid(axis="x", visible=False)
        if logy:
            ax.set_yscale("log")
        if title:
            ax.set_title(title)
        ax.legend(loc="best")
        fig.tight_layout()
    drawn = [dict(label="two-level (peak)", panel=0, x=pos, y=two / div, artist=bars_two,
                  x_div=1.0, y_div=div, y_column=two_col, points=[int(r["point"]) for r in rows],
                  ticks=labels),
             dict(label="flat table (same requests)", panel=0, x=pos, y=flat / div,
                  artist=bars_flat, x_div=1.0, y_div=div, y_column=flat_col,
                  points=[int(r["point"]) for r in rows], ticks=labels)]
    return Plot(name or "metadata", fig, drawn)


COMPARE_METRICS = ("throughput_tokens_per_s", "ttft_s.p50", "ttft_s.p99", "tpot_s.p50",
                   "tpot_s.p99", "batch_mean", "hit_ratio", "h2d_bytes_per_output_token")


def match_rows(sim, measured, on=None):
    """Pairs each row of `measured` with the row of `sim` that has the same values of the join
    keys (`on`, or the swept keys both have). Returns (keys, list of (sim_row, measured_row))."""
    if on:
        for k in on:
            sim.require(k, "--on column (simulated)")
            measured.require(k, "--on column (measured)")
        keys = list(on)
    else:
        keys = [k for k in sim.keys if k in measured.keys]
    if not keys:
        if len(sim.df) == 1 and len(measured.df) == 1:
            return [], [(sim.df.iloc[0], measured.df.iloc[0])]
        raise AnalysisError("cannot match simulated and measured rows: they share no swept key; "
                            "name the columns to match on with --on KEY[,KEY...]")

    def index(table, what):
        out = {}
        for _, r in table.df.iterrows():
            k = tuple(data.fmt_value(r[c]) for c in keys)
            if k in out:
                raise AnalysisError(f"{what} rows of points {out[k]['point']} and {r['point']} "
                                    f"have the same {', '.join(keys)}: add --on or --where")
            out[k] = r
        return out
    s_index = index(sim, "simulated")
    pairs = []
    for k, m in index(measured, "measured").items():
        if k in s_index:
            pairs.append((s_index[k], m))
    if not pairs:
        raise AnalysisError(f"no measured row matches a simulated row on {', '.join(keys)}")
    return keys, pairs


def compare(sim, measured, metrics=None, on=None, group=None, name=None, title=None, **_):
    """Simulated (x) against measured (y) for each metric both have, with the y = x line."""
    keys, pairs = match_rows(sim, measured, on)
    if metrics:
        for m in metrics:
            sim.require(m, "metric (simulated)")
            measured.require(m, "metric (measured)")
    else:
        metrics = [m for m in COMPARE_METRICS if m in sim.df.columns and m in measured.df.columns]
        if not metrics:
            raise AnalysisError("the simulated and measured tables share none of the metrics "
                                + ", ".join(COMPARE_METRICS) + "; name some with --metrics")
    group = resolve_group(sim, group)
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    with style.style_context():
        fig, axes = style.new_figure(ncols=ncols, nrows=nrows, width=3.0 * ncols + 0.6,
                                     height=2.8 * nrows)
        palette = style.Palette(group)
        colours = {}
        drawn = []
        for i, m in enumerate(metrics):
            ax = axes[i]
            xs = np.array([float(s[m]) for s, _ in pairs])
            ys = np.array([float(r[m]) for _, r in pairs])
            label, div = style.axis_label(m, np.concatenate([xs, ys]))
            px, py = xs / div, ys / div
            # Blank values (a dense mode's hit ratio, a run without samples) are not drawn.
            finite = np.concatenate([px, py])
            finite = finite[np.isfinite(finite)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#777777", linestyle="--",
                    linewidth=0.8, label="y = x")
            groups = [s[group] if group else "all" for s, _ in pairs]
            for gval in sorted(set(map(str, groups)), key=lambda v: style.sort_key(group, v)):
                sel = [j for j, g in enumerate(groups) if str(g) == gval]
                if gval not in colours:
                    colours[gval] = palette.colour(gval)
                artist = ax.scatter(px[sel], py[sel], color=colours[gval], s=18, label=gval,
                                    zorder=3)
                drawn.append(dict(label=gval, panel=i, x=px[sel], y=py[sel], artist=artist,
                                  x_div=div, y_div=div, metric=m,
                                  points=[int(pairs[j][0]["point"]) for j in sel],
                                  measured_points=[int(pairs[j][1]["point"]) for j in sel]))
            lower = label[0].lower() + label[1:] if label[1:2].islower() else label
            ax.set_xlabel("simulated " + lower)
            ax.set_ylabel("measured " + lower)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        axes[0].legend(loc="best")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
    return Plot(name or "sim_vs_measured", fig, drawn, notes=[f"matched on {', '.join(keys)}"
                                                              if keys else "one row each"])
