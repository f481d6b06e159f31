"""Builds small sweep folders with the real `spin sim`, laid out exactly as docs/sweeps.md says
`spin sweep` lays them out (sweep.yaml, results.csv, points/pNNNNNN/), for the analysis tests.

    build_sweep(spin, out, grid={"serving.mode": ["dense", "spin:shadowkv"], ...}, seeds=[1, 2])

The points are the cartesian product of `grid` (the first key varies slowest), each once per seed
when `seeds` is given (swept key `seed`). Each point runs
`spin sim --set KEY=VALUE ... --out OUT/points/pNNNNNN.tmp --no-timeline`, renamed when complete;
results.csv holds point, status, error, folder, the swept keys (values as written), then every
number and string of the point's summary.json, nested keys joined with dots.
"""
import csv
import io
import itertools
import json
import os
import subprocess

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def flatten(obj, prefix=""):
    out = {}
    for key, value in obj.items():
        name = prefix + key
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, bool) or value is None or isinstance(value, list):
            continue
        elif isinstance(value, (int, float, str)):
            out[name] = value
    return out


def as_written(value):
    return value if isinstance(value, str) else json.dumps(value)


def metric_text(value):
    return value if isinstance(value, str) else json.dumps(value)


def sweep_yaml(grid, seeds, sets):
    lines = ["# built by tests/analysis/fixture.py with spin sim, one run per point",
             "command: sim"]
    if sets:
        lines.append("set:")
        lines += [f"  - {s}" for s in sets]
    lines += ["axes:", "  - grid:"]
    for k, values in grid.items():
        lines.append(f"      {k}: [{', '.join(as_written(v) for v in values)}]")
    if seeds:
        lines.append(f"seeds: [{', '.join(str(s) for s in seeds)}]")
    return "\n".join(lines) + "\n"


def build_sweep(spin, out, grid, seeds=None, sets=(), order=None):
    """Runs the points and writes the sweep folder. `order`, if given, is a permutation of the
    expanded points (to make a sweep whose point numbers differ from another's). Returns the
    list of points as dicts of swept key -> value."""
    keys = list(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*grid.values())]
    points = []
    for c in combos:
        for s in (seeds or [None]):
            p = dict(c)
            if s is not None:
                p["seed"] = s
            points.append(p)
    if order is not None:
        points = [points[i] for i in order]
    swept = keys + (["seed"] if seeds else [])
    os.makedirs(os.path.join(out, "points"), exist_ok=True)
    with open(os.path.join(out, "sweep.yaml"), "w") as f:
        f.write(sweep_yaml(grid, seeds, sets))
    rows, metric_names = [], []
    for n, p in enumerate(points):
        folder = f"points/p{n:06d}"
        tmp = os.path.join(out, folder + ".tmp")
        cmd = [os.path.abspath(spin), "sim", "--no-timeline", "--out", os.path.abspath(tmp)]
        for s in sets:
            cmd += ["--set", s]
        for k in swept:
            cmd += ["--set", f"{k}={as_written(p[k])}"]
        # from the repository root: the default config's trace.path is traces/sample.spt
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
        with open(os.path.join(tmp, "point.json"), "w") as f:
            json.dump({"point": n, "keys": p}, f)
        os.rename(tmp, os.path.join(out, folder))
        with open(os.path.join(out, folder, "summary.json")) as f:
            metrics = flatten(json.load(f))
        for m in metrics:
            if m not in metric_names:
                metric_names.append(m)
        row = {"point": str(n), "status": "ok", "error": "", "folder": folder}
        row.update({k: as_written(p[k]) for k in swept})
        row.update({m: metric_text(v) for m, v in metrics.items()})
        rows.append(row)
    header = ["point", "status", "error", "folder"] + swept + metric_names
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    with open(os.path.join(out, "results.csv"), "w") as f:
        f.write(buf.getvalue())
    return points


def read_csv(path):
    """results.csv as a list of dicts of text (the tests' own reading, without pandas)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
