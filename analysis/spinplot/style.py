"""The one place that fixes how figures look: colours per serving mode and per cache policy,
axis labels with units, the matplotlib style, and how files are written (deterministically)."""
import contextlib
import io
import numbers
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Okabe-Ito colour-blind-safe palette. One colour per mode family (`spin --list modes`).
MODE_COLOURS = {
    "dense": "#0072B2",            # blue
    "dense-offload": "#56B4E9",    # sky blue
    "sparse-original": "#E69F00",  # orange
    "spin": "#D55E00",             # vermillion
    "oracle": "#009E73",           # green
    "ideal": "#CC79A7",            # purple
}
MODE_ORDER = list(MODE_COLOURS)
# Cache policies (`spin --list policies`): bucketed LRU is spin's, Belady the oracle's.
POLICY_COLOURS = {
    "bucketed-lru": "#D55E00",
    "lru": "#0072B2",
    "belady": "#009E73",
    "fifo": "#E69F00",
    "prev-step": "#CC79A7",
}
POLICY_ORDER = list(POLICY_COLOURS)
# Anything else (other grouping columns, unknown modes) takes these in order of first sight.
OTHER_COLOURS = ["#000000", "#999999", "#F0E442", "#8C564B", "#17BECF", "#BCBD22", "#7F7F7F"]
LINESTYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
# Two-level vs flat metadata bars.
METADATA_COLOURS = {"two-level": "#D55E00", "flat": "#999999"}

STYLE = {
    "figure.figsize": (5.0, 3.4),
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05,
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "axes.formatter.useoffset": False,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.5,
    "lines.markersize": 4.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "pdf.fonttype": 42,
    "svg.hashsalt": "spin",
}


def mode_family(mode):
    return str(mode).split(":", 1)[0]


def sort_key(column, value):
    """Orders groups: modes and policies in their fixed order, then numbers, then text."""
    text = str(value)
    if column in ("serving.mode", "mode"):
        fam = mode_family(text)
        return (MODE_ORDER.index(fam) if fam in MODE_ORDER else len(MODE_ORDER), 1, 0.0, text)
    if column in ("cache.policy", "policy"):
        return (POLICY_ORDER.index(text) if text in POLICY_ORDER else len(POLICY_ORDER), 1, 0.0,
                text)
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value:
        return (0, 0, float(value), "")
    return (0, 1, 0.0, text)


class Palette:
    """Colour by the primary group value (fixed maps for modes and policies); series that share
    a colour get different line styles and markers."""

    def __init__(self, column):
        self.column = column
        self.others = {}
        self.used = {}

    def colour(self, value):
        text = str(value)
        if self.column in ("serving.mode", "mode") and mode_family(text) in MODE_COLOURS:
            return MODE_COLOURS[mode_family(text)]
        if self.column in ("cache.policy", "policy") and text in POLICY_COLOURS:
            return POLICY_COLOURS[text]
        if text not in self.others:
            self.others[text] = OTHER_COLOURS[len(self.others) % len(OTHER_COLOURS)]
        return self.others[text]

    def style(self, value):
        """(colour, linestyle, marker) for the next series of this primary value."""
        c = self.colour(value)
        n = self.used.get(c, 0)
        self.used[c] = n + 1
        return c, LINESTYLES[n % len(LINESTYLES)], MARKERS[n % len(MARKERS)]


# Axis labels: column -> (label, unit). Units of bytes are scaled automatically; times in
# seconds of TPOT are shown in ms.
LABELS = {
    "trace.generator.workload.rate_rps": ("Request rate", "req/s"),
    "cache.buffer_ratio": ("Buffer ratio k (buffering : mandatory pages)", None),
    "cache.buckets": ("Bucket count B", None),
    "cache.bucket_width_steps": ("Bucket width", "decode steps"),
    "cache.segment_pages": ("Segment size", "pages"),
    "serving.max_batch_requests": ("Max batch", "requests"),
    "serving.max_batch_tokens": ("Max batch tokens", "tokens"),
    "serving.tensor_parallel": ("Tensor parallelism", "GPUs"),
    "serving.min_buffer_ratio": ("Minimum buffer ratio k_min", None),
    "sim.stream_sampling": ("Stream sampling rate", None),
    "throughput_tokens_per_s": ("Throughput", "output tokens/s"),
    "throughput_requests_per_s": ("Throughput", "requests/s"),
    "hit_ratio": ("Hit ratio", None),
    "total.hit_ratio": ("Hit ratio", None),
    "batch_mean": ("Average batch size", "requests"),
    "batch_max": ("Maximum batch size", "requests"),
    "decode_only.tokens_per_s": ("Decode throughput (decode-only iterations)", "output tokens/s"),
    "decode_only.batch_mean": ("Batch of decode-only iterations", "requests"),
    "duration_s": ("Duration", "s"),
    "preemptions": ("Preemptions", None),
    "h2d_bytes_per_output_token": ("PCIe host→HBM per output token", "bytes"),
    "pcie_h2d_bytes": ("PCIe host→HBM", "bytes"),
    "pcie_d2h_bytes": ("PCIe HBM→host", "bytes"),
    "ttft_s": ("TTFT", "s"),
    "tpot_s": ("TPOT", "ms"),
}
BYTE_UNITS = [("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024), ("B", 1)]


def byte_unit(values):
    """(unit, bytes per unit) that shows the largest of `values` as at least 1."""
    top = max([abs(float(v)) for v in values if v == v] or [0.0])
    for unit, size in BYTE_UNITS:
        if top >= size:
            return unit, size
    return "B", 1


def axis_label(column, values=()):
    """(text, divisor): the label with its unit, and what to divide the column's values by."""
    base = column.split(".")[0] if column.split(".")[0] in ("ttft_s", "tpot_s") else column
    label, unit = LABELS.get(base, (None, None))
    divisor = 1.0
    if label is None:
        if column.endswith("_bytes") or column.startswith("hbm.") or column.startswith("metadata."):
            label, unit = column, "bytes"
        else:
            return column, 1.0
    if base in ("ttft_s", "tpot_s"):
        stat = column.split(".", 1)[1] if "." in column else ""
        label = f"{label} {stat}".strip()
        if unit == "ms":
            divisor = 1e-3
    if unit == "bytes":
        unit, divisor = byte_unit(values)
    return (f"{label} ({unit})" if unit else label), divisor


def new_figure(ncols=1, nrows=1, width=None, height=None, sharey=False):
    w, h = STYLE["figure.figsize"]
    if width is None:
        width = w * (0.75 * ncols + 0.25) if ncols > 1 else w
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height or h), squeeze=False,
                             sharey=sharey)
    return fig, [ax for row in axes for ax in row]


@contextlib.contextmanager
def style_context():
    """matplotlib's own defaults (no matplotlibrc of the user) and STYLE, restored on exit.
    Drawing and saving both run inside it (savefig.* and pdf.* are read when saving)."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(STYLE)
        yield


PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None}
SVG_METADATA = {"Creator": None, "Date": None}


def save(fig, out_dir, name, formats=("png", "pdf")):
    """Writes NAME.png / NAME.pdf into out_dir with no dates or versions in them (same figure,
    same bytes). Returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    with style_context():
        for fmt in formats:
            path = os.path.join(out_dir, f"{name}.{fmt}")
            meta = {"png": PNG_METADATA, "pdf": PDF_METADATA, "svg": SVG_METADATA}.get(fmt)
            tmp = path + ".tmp"
            fig.savefig(tmp, format=fmt, metadata=meta)
            os.replace(tmp, path)
            paths.append(path)
    return paths


def png_bytes(fig, dpi=None):
    buf = io.BytesIO()
    with style_context():
        fig.savefig(buf, format="png", metadata=PNG_METADATA, dpi=dpi or STYLE["savefig.dpi"])
    return buf.getvalue()


def close(fig):
    plt.close(fig)
