"""Reading spin's outputs into tables: sweep folders (results.csv, docs/sweeps.md), bare
results.csv files, and single run folders (summary.json of `spin sim --out`, or replay.json).

A Table holds the ok rows of one or more inputs, the swept-key columns, and for every row the
folder its point's files live in (for requests.csv).
"""
import json
import math
import os
import sys

import pandas as pd


class AnalysisError(Exception):
    """A user error (bad input, missing column): reported as one line, exit status 2."""


# Columns every results.csv starts with (docs/sweeps.md).
FIXED_COLUMNS = ("point", "status", "error", "folder")
# Top-level configuration sections (spin config keys); a swept key is one of these or inside one.
CONFIG_SECTIONS = ("model", "hardware", "trace", "cache", "serving", "sim")
SCALAR_KEYS = ("seed", "model", "hardware")
# Hidden column: absolute folder of the row's point (where its requests.csv lives).
ROOT_COLUMN = "_root"


def is_config_key(column):
    if column in SCALAR_KEYS:
        return True
    head, dot, _ = column.partition(".")
    return bool(dot) and head in CONFIG_SECTIONS


def flatten(obj, prefix=""):
    """Every number and string of a JSON object, nested keys joined with dots (lists skipped)."""
    out = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, bool) or value is None or isinstance(value, list):
            continue
        elif isinstance(value, (int, float, str)):
            out[name] = value
    return out


class Table:
    """Ok rows of one or more inputs (a DataFrame), the swept keys, and notes about the inputs."""

    def __init__(self, df, keys, description, failed=None):
        self.df = df
        self.keys = list(keys)
        self.description = description
        self.failed = failed if failed is not None else pd.DataFrame(columns=list(FIXED_COLUMNS))

    def columns(self):
        return [c for c in self.df.columns if c != ROOT_COLUMN]

    def metrics(self):
        return [c for c in self.columns() if c not in self.keys and c not in FIXED_COLUMNS]

    def require(self, column, what="column"):
        if column not in self.df.columns or column == ROOT_COLUMN:
            raise AnalysisError(
                f"{what} '{column}' is not in {self.description}; available columns: "
                + ", ".join(self.columns()))
        return column

    def first_present(self, candidates, what):
        for c in candidates:
            if c in self.df.columns:
                return c
        raise AnalysisError(
            f"{what}: none of the columns {', '.join(repr(c) for c in candidates)} is in "
            f"{self.description}; available columns: " + ", ".join(self.columns()))

    def numeric_keys(self):
        return [k for k in self.keys if pd.api.types.is_numeric_dtype(self.df[k])]

    def varying_keys(self):
        return [k for k in self.keys if self.df[k].nunique(dropna=False) > 1]

    def copy_with(self, df):
        return Table(df, self.keys, self.description, self.failed)


def _swept_keys_from_sweep_file(folder, columns):
    """The keys named by OUT/sweep.yaml (grid and zip axes, seeds), when it can be read."""
    path = os.path.join(folder, "sweep.yaml")
    if not os.path.isfile(path):
        return None
    try:
        import yaml
        with open(path) as f:
            doc = yaml.safe_load(f)
        keys = []
        for axis in doc.get("axes") or []:
            for kind in ("grid", "zip"):
                if isinstance(axis, dict) and isinstance(axis.get(kind), dict):
                    keys.extend(str(k) for k in axis[kind])
        if doc.get("seeds"):
            keys.append("seed")
    except Exception:  # an unreadable sweep file: fall back on the column names
        return None
    keys = [k for k in keys if k in columns]
    return keys or None


def _swept_keys_from_columns(columns):
    """The columns after `folder` that name configuration keys, up to the first metric."""
    keys = []
    for c in columns[len(FIXED_COLUMNS):]:
        if not is_config_key(c):
            break
        keys.append(c)
    return keys


def read_results_csv(path):
    """A results.csv (docs/sweeps.md) as a Table of its ok rows."""
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"error": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise AnalysisError(f"cannot read {path}: {e}")
    missing = [c for c in FIXED_COLUMNS if c not in df.columns]
    if missing:
        raise AnalysisError(f"{path} is not a sweep's results.csv: it has no column "
                            + ", ".join(repr(c) for c in missing) + " (docs/sweeps.md)")
    folder = os.path.dirname(os.path.abspath(path))
    keys = _swept_keys_from_sweep_file(folder, list(df.columns)) or \
        _swept_keys_from_columns(list(df.columns))
    ok = df["status"].astype(str) == "ok"
    failed = df[~ok][list(FIXED_COLUMNS)].copy()
    df = df[ok].copy()
    df[ROOT_COLUMN] = [os.path.join(folder, str(f)) for f in df["folder"]]
    df = df.reset_index(drop=True)
    # Metric columns of ok rows that pandas read as text because of a failed row's blanks are
    # numeric again once those rows are gone.
    for c in df.columns:
        if df[c].dtype == object and c not in FIXED_COLUMNS and c != ROOT_COLUMN:
            converted = pd.to_numeric(df[c], errors="coerce")
            if converted.notna().sum() == df[c].notna().sum() and len(df):
                df[c] = converted
    return Table(df, keys, path, failed)


def _run_config(folder, summary):
    """The configuration keys of a run folder: its resolved_config.yaml flattened (`cache.policy`,
    `cache.buffer_ratio`, ...), as a sweep's results.csv names them."""
    path = os.path.join(folder, "resolved_config.yaml")
    if not os.path.exists(path):  # e.g. spin replay --json FILE: the figures alone
        print(f"note: {os.path.join(folder, summary)} has no resolved_config.yaml beside it: "
              "its configuration keys are unknown (spin sim/replay --out DIR keeps both)",
              file=sys.stderr)
        return {}
    try:
        import yaml
        with open(path) as f:
            doc = yaml.safe_load(f)
    except ImportError:
        raise AnalysisError("reading a run folder's resolved_config.yaml needs PyYAML "
                            "(python3-yaml)") from None
    except OSError as e:
        raise AnalysisError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise AnalysisError(f"cannot read {path}: {e}") from None
    if not isinstance(doc, dict):
        raise AnalysisError(f"{path} is not a resolved configuration (expected a mapping)")
    return {k: v for k, v in flatten(doc).items() if is_config_key(k)}


def read_run_folder(folder):
    """A single run folder (`spin sim --out` or `spin replay --out`) as a one-row Table: its
    summary's figures and its resolved configuration's keys."""
    for name in ("summary.json", "replay.json"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    doc = json.load(f)
            except (OSError, ValueError) as e:
                raise AnalysisError(f"cannot read {path}: {e}")
            doc.pop("layers", None)
            row = {"point": 0, "status": "ok", "error": "", "folder": "."}
            row.update(flatten(doc))
            row.update((k, v) for k, v in _run_config(folder, name).items() if k not in row)
            row[ROOT_COLUMN] = os.path.abspath(folder)
            return Table(pd.DataFrame([row]), [], path)
    raise AnalysisError(f"{folder}: neither a sweep folder (results.csv) nor a run folder "
                        "(summary.json or replay.json)")


def _varying_config_keys(df):
    """The configuration keys whose values differ between rows, as a sweep would name them: a
    section's preset rather than every key it sets, no free-text description or source, and
    `seed` rather than the generator's seed, which follows it."""
    varying = [c for c in df.columns if is_config_key(c) and df[c].astype(str).nunique() > 1]
    presets = {c.rsplit(".", 1)[0] for c in varying if c.endswith(".preset")}
    return [c for c in varying
            if not c.endswith((".description", ".source"))
            and not any(c.startswith(p + ".") and not c.endswith(".preset") for p in presets)
            and not (c == "trace.generator.seed" and "seed" in varying)]


def read_input(path):
    """A sweep folder, a results.csv, or a run folder."""
    if os.path.isdir(path):
        results = os.path.join(path, "results.csv")
        if os.path.isfile(results):
            return read_results_csv(results)
        return read_run_folder(path)
    if os.path.isfile(path):
        if path.endswith(".json"):
            return read_run_folder(os.path.dirname(os.path.abspath(path)))
        return read_results_csv(path)
    raise AnalysisError(f"{path}: no such file or folder")


# Figures that have no samples in a run that finished no request, which spin writes as 0
# (docs/simulator.md, "Scheduler"): blank (NaN) in such rows, so that no figure draws them as 0.
NO_SAMPLE_PREFIXES = ("ttft_s.", "tpot_s.", "throughput_", "decode_only.", "batch_", "hit_ratio")


def _blanked(table, rows, columns):
    """The table with `columns` blank (NaN) in `rows` (a boolean mask)."""
    df = table.df.copy()
    df[columns] = df[columns].astype(float)
    df.loc[rows, columns] = float("nan")
    return table.copy_with(df)


def _blank_unsampled(table, note):
    df = table.df
    if "requests_finished" not in df.columns:
        return table
    none = pd.to_numeric(df["requests_finished"], errors="coerce") == 0
    if not none.any():
        return table
    if note:
        print(f"note: {int(none.sum())} point(s) of {table.description} finished no request "
              f"(point {', '.join(str(p) for p in df.loc[none, 'point'])}): their latency, "
              "throughput, batch and hit-ratio figures have no samples and are left out",
              file=sys.stderr)
    return _blanked(table, none, [c for c in df.columns if c.startswith(NO_SAMPLE_PREFIXES)])


# Modes without a page cache (docs/simulator.md, "Modes"): spin writes their hit ratio as 0.
NO_CACHE_MODES = ("dense", "dense-offload")


def _blank_cacheless(table):
    """hit_ratio blank (NaN) in the rows of dense modes, which have no cache to hit, so that no
    figure or report shows them as a 0 hit ratio."""
    df = table.df
    if "hit_ratio" not in df.columns or "mode" not in df.columns:
        return table
    dense = df["mode"].astype(str).isin(NO_CACHE_MODES)
    return _blanked(table, dense, ["hit_ratio"]) if dense.any() else table


def _partial_sweep_note(path, rows):
    """A note when a sweep folder's results.csv holds fewer points than its shard.json says the
    shard has (a sweep still running, stopped, or a merge with shards missing), else None."""
    record = os.path.join(os.path.dirname(os.path.abspath(path)), "shard.json")
    try:
        with open(record) as f:
            doc = json.load(f)
        index, count = (int(x) for x in str(doc["shard"]).split("/"))
        expected = len(range(index, int(doc["sweep_points"]), count))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if rows >= expected:
        return None
    return (f"note: {path} holds {rows} of its {expected} points: the sweep is unfinished "
            "(or a merge lacks shards); run it again to complete it")


def load(paths, where=(), note=True):
    """One Table from several inputs: rows concatenated; with more than one input a swept key
    `source` (the input's name) tells them apart. `where` filters are applied last."""
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        raise AnalysisError("no input given")
    tables = []
    for p in paths:
        try:
            tables.append(read_input(p))
        except UnicodeDecodeError:
            raise AnalysisError(f"{p}: not a text file; expected a sweep folder, a run folder, "
                                "results.csv or replay.json") from None
    for t in tables:
        partial = note and os.path.basename(t.description) == "results.csv" and \
            _partial_sweep_note(t.description, len(t.df) + len(t.failed))
        if partial:
            print(partial, file=sys.stderr)
    if len(tables) == 1:
        table = tables[0]
    else:
        names = [os.path.basename(os.path.normpath(p)) or p for p in paths]
        if len(set(names)) < len(names):
            names = [os.path.normpath(p) for p in paths]
        frames = []
        keys = ["source"]
        for name, t in zip(names, tables):
            df = t.df.copy()
            df.insert(0, "source", name)
            frames.append(df)
            keys.extend(k for k in t.keys if k not in keys)
        df = pd.concat(frames, ignore_index=True, sort=False)
        kinds = {os.path.basename(t.description) for t in tables}
        if kinds <= {"summary.json", "replay.json"}:
            # Run folders only: the configuration keys in which they differ are the swept keys,
            # and `source` one only where those leave two runs alike or sim and replay runs mix.
            varying = _varying_config_keys(df)
            if varying and len(kinds) == 1 and not df[varying].astype(str).duplicated().any():
                keys = varying
            else:
                keys.extend(varying)
        failed = pd.concat([t.failed for t in tables], ignore_index=True, sort=False)
        table = Table(df, keys, " and ".join(t.description for t in tables), failed)
    if note and len(table.failed):
        print(f"note: skipping {len(table.failed)} failed point(s) of {table.description}: "
              + "; ".join(f"point {r.point}: {r.error}" for r in table.failed.itertuples()),
              file=sys.stderr)
    table = _blank_unsampled(table, note)
    table = _blank_cacheless(table)
    table = apply_where(table, where)
    if table.df.empty:
        raise AnalysisError(f"no ok rows in {table.description}"
                            + (" after --where " + " ".join(where) if where else ""))
    return table


def _matches(series, value):
    as_text = series.astype(str) == value
    try:
        number = float(value)
    except ValueError:
        return as_text
    numeric = pd.to_numeric(series, errors="coerce")
    return as_text | (numeric == number)


def apply_where(table, where):
    """Keeps the rows where each KEY=VALUE[,VALUE...] holds (text or numeric equality)."""
    df = table.df
    for clause in where or ():
        key, eq, values = clause.partition("=")
        if not eq or not key:
            raise AnalysisError(f"--where '{clause}': expected KEY=VALUE[,VALUE...]")
        table.require(key, "--where column")
        mask = pd.Series(False, index=df.index)
        for v in values.split(","):
            mask |= _matches(df[key], v)
        df = df[mask]
    return table.copy_with(df.reset_index(drop=True))


def fmt_value(v):
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if v.is_integer():
            return str(int(v))
        return f"{v:g}"
    return str(v)


def split_columns(table, primary, exclude=()):
    """The columns that tell series apart: the primary grouping column (when it is a column),
    then every other swept key that varies, except those in `exclude` and `seed` (averaged)."""
    cols = []
    if primary is not None:
        cols.append(primary)
    for k in table.varying_keys():
        if k not in cols and k not in exclude and k != "seed":
            cols.append(k)
    return cols


def series_label(cols, values, primary, constant_primary=False):
    """'primary value, key=value, ...'; a primary value that is the same in every row is left
    out when other keys tell the series apart."""
    parts = []
    for c, v in zip(cols, values):
        if c == primary:
            if not (constant_primary and len(cols) > 1):
                parts.append(fmt_value(v))
        else:
            parts.append(f"{c}={fmt_value(v)}")
    return ", ".join(parts) if parts else "all"


def _constant(table, column):
    return column is not None and column in table.df.columns and \
        table.df[column].nunique(dropna=False) <= 1


def line_series(table, x, y, primary):
    """Splits the rows into series (see split_columns) and gives each its (x, y) points sorted
    by x, y averaged over seeds. Rows with no x or y are left out (noted on stderr); two rows of
    one series at one x that differ in no swept key other than seed are an error."""
    df = table.df
    cols = split_columns(table, primary, exclude=(x,))
    bad = df[x].isna() | df[y].isna()
    if bad.any():
        print(f"note: leaving out {int(bad.sum())} row(s) with no value of {x} or {y}",
              file=sys.stderr)
        df = df[~bad]
    if not pd.api.types.is_numeric_dtype(df[x]):
        raise AnalysisError(f"x column '{x}' is not numeric (values: "
                            + ", ".join(sorted(set(map(str, df[x])))[:8])
                            + "); numeric swept keys: "
                            + (", ".join(table.numeric_keys()) or "none"))
    if not pd.api.types.is_numeric_dtype(df[y]):
        raise AnalysisError(f"y column '{y}' is not numeric")
    seed_cols = ["seed"] if "seed" in table.keys else []
    dup = df.duplicated(subset=cols + [x] + seed_cols, keep=False)
    if dup.any():
        points = ", ".join(str(p) for p in df.loc[dup, "point"].tolist()[:10])
        raise AnalysisError(
            f"rows of points {points} share {', '.join(cols + [x]) or x} but are different "
            "runs: tell them apart with --group, or pick one with --where KEY=VALUE")
    out = []
    groups = [((), df)] if not cols else df.groupby(cols if len(cols) > 1 else cols[0],
                                                     sort=False, dropna=False)
    for values, part in groups:
        if not isinstance(values, tuple):
            values = (values,)
        agg = part.groupby(x, sort=True)[y].mean()
        out.append({"values": dict(zip(cols, values)), "columns": cols,
                    "label": series_label(cols, values, primary, _constant(table, primary)),
                    "primary": values[0] if cols and cols[0] == primary else None,
                    "x": agg.index.to_numpy(dtype=float), "y": agg.to_numpy(dtype=float),
                    "points": part["point"].tolist()})
    return out


def row_label(table, row, primary, exclude=()):
    cols = split_columns(table, primary, exclude)
    if "seed" in table.varying_keys():
        cols.append("seed")
    return series_label(cols, [row[c] for c in cols], primary, _constant(table, primary)), \
        (row[primary] if primary else None)


def read_requests(table, row, column):
    """The `column` of a row's requests.csv (its point folder), rejected requests left out."""
    path = os.path.join(row[ROOT_COLUMN], "requests.csv")
    try:
        req = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise AnalysisError(f"cannot read {path} (point {row['point']}): {e}")
    if column not in req.columns:
        raise AnalysisError(f"column '{column}' is not in {path}; available columns: "
                            + ", ".join(req.columns))
    if "rejected" in req.columns:
        req = req[req["rejected"] != 1]
    values = pd.to_numeric(req[column], errors="coerce").dropna()
    return values.to_numpy(dtype=float)
