#!/usr/bin/env python3
"""Decode attention in PyTorch (scaled_dot_product_attention) on the shapes of the dense table of
`spin bench gpu` (docs/gpu-kernels.md): GQA 40 query / 8 KV heads, head dim 128, bf16, one query
token per request, batch x KV length 1x16K, 8x16K, 64x1K, 64x4K, 32x16K, 8x64K.

Each backend (flash, cuDNN, memory-efficient) is forced with torch.nn.attention.sdpa_kernel and
timed with CUDA events: a CUDA graph of --runs back-to-back calls over rotating copies of K/V
(at least 1 GiB of distinct K/V per graph, so L2 never holds it), median of --reps replays; if
graph capture fails, the same calls eagerly. GB/s = K and V bytes read / time. A backend that
refuses enable_gqa=True is retried with K/V expanded to 40 heads (repeat_interleave, outside the
timed region); the result says which form ran. Prints JSON; with --ours CSV (written by
`spin bench gpu --attention-csv`), also one markdown table of both.

With --prefill, times causal prefill instead (is_causal=True, batch 1, head dim 128, bf16) on the
shapes of the prefill table of `spin bench gpu`: 16K and 64K tokens with 40 / 8 and 32 / 8 query /
KV heads, in SDPA's layout [1, heads, tokens, 128], each backend forced in turn; median of --reps
eager calls after warm-up; TFLOP/s = 4 * 128 * query heads * L^2/2 / time (FlashAttention's causal
convention, as `spin bench gpu`). With --ours-prefill CSV (`spin bench gpu --prefill-csv`), also one
markdown table with the ratio ours / best SDPA backend.

Runs only where PyTorch and a CUDA GPU are (the GPU machine).
"""
import argparse
import json
import math
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [(1, 16384), (8, 16384), (64, 1024), (64, 4096), (32, 16384), (8, 65536)]
BACKENDS = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION)]
Q_HEADS, KV_HEADS, HEAD_DIM = 40, 8, 128


def time_calls(call, sets, runs, reps):
    """Seconds per call: graph replay if it captures, else an eager loop; and which was used."""
    torch.cuda.synchronize()
    for r in range(3):
        call(r % sets)
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    try:
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            call(0)  # warm-up on the capture stream
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            for r in range(runs):
                call(r % sets)
        graph.replay()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            start.record()
            graph.replay()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3 / runs)
        return statistics.median(times), "graph"
    except Exception:  # noqa: BLE001 - any capture failure falls back to eager timing
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            start.record()
            for r in range(runs):
                call(r % sets)
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3 / runs)
        return statistics.median(times), "eager"


def bench_shape(batch, kv_len, runs, reps):
    dev = torch.device("cuda")
    kv_bytes = 2 * batch * KV_HEADS * kv_len * HEAD_DIM * 2
    sets = max(1, min(runs, math.ceil((1 << 30) / kv_bytes)))
    q = torch.randn(batch, Q_HEADS, 1, HEAD_DIM, dtype=torch.bfloat16, device=dev)
    ks = [torch.randn(batch, KV_HEADS, kv_len, HEAD_DIM, dtype=torch.bfloat16, device=dev)
          for _ in range(sets)]
    vs = [torch.randn_like(ks[0]) for _ in range(sets)]
    result = {"batch": batch, "kv_tokens": kv_len, "kv_bytes": kv_bytes, "sets": sets,
              "backends": {}}
    for name, backend in BACKENDS:
        entry = {}
        for gqa in ("native", "expanded"):
            try:
                if gqa == "native":
                    k_in, v_in = ks, vs
                    kwargs = {"enable_gqa": True}
                else:
                    rep = Q_HEADS // KV_HEADS
                    k_in = [k.repeat_interleave(rep, dim=1) for k in ks]
                    v_in = [v.repeat_interleave(rep, dim=1) for v in vs]
                    kwargs = {}
                with sdpa_kernel(backend):
                    out = F.scaled_dot_product_attention(q, k_in[0], v_in[0], **kwargs)
                    torch.cuda.synchronize()
                    if not torch.isfinite(out).all():
                        raise RuntimeError("non-finite output")
                    t, how = time_calls(
                        lambda r: F.scaled_dot_product_attention(q, k_in[r], v_in[r], **kwargs),
                        sets, runs, reps)
                entry = {"us": t * 1e6, "gbps": kv_bytes / t / 1e9, "gqa": gqa, "timing": how}
                break
            except Exception as e:  # noqa: BLE001 - a backend may refuse a shape
                entry = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
            finally:
                if gqa == "expanded":
                    k_in = v_in = None
                    torch.cuda.empty_cache()
        result["backends"][name] = entry
    del ks, vs
    torch.cuda.empty_cache()
    return result


def d2d_gbps(reps):
    a = torch.randn(1 << 29, dtype=torch.bfloat16, device="cuda")  # 1 GiB
    b = torch.empty_like(a)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    b.copy_(a)
    times = []
    for _ in range(reps):
        start.record()
        b.copy_(a)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return 2 * a.numel() * 2 / statistics.median(times) / 1e9


PREFILL_SHAPES = [(16384, 40, 8), (65536, 40, 8), (16384, 32, 8), (65536, 32, 8)]


def bench_prefill_shape(tokens, q_heads, kv_heads, reps):
    dev = torch.device("cuda")
    q = torch.randn(1, q_heads, tokens, HEAD_DIM, dtype=torch.bfloat16, device=dev)
    k = torch.randn(1, kv_heads, tokens, HEAD_DIM, dtype=torch.bfloat16, device=dev)
    v = torch.randn_like(k)
    flops = 4 * HEAD_DIM * q_heads * tokens * tokens / 2
    result = {"tokens": tokens, "q_heads": q_heads, "kv_heads": kv_heads, "flops": flops,
              "backends": {}}
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for name, backend in BACKENDS:
        entry = {}
        for gqa in ("native", "expanded"):
            k_in = v_in = None
            try:
                if gqa == "native":
                    k_in, v_in, kwargs = k, v, {"enable_gqa": True}
                else:
                    rep = q_heads // kv_heads
                    k_in = k.repeat_interleave(rep, dim=1)
                    v_in = v.repeat_interleave(rep, dim=1)
                    kwargs = {}
                with sdpa_kernel(backend):
                    out = F.scaled_dot_product_attention(q, k_in, v_in, is_causal=True, **kwargs)
                    torch.cuda.synchronize()
                    if not torch.isfinite(out).all():
                        raise RuntimeError("non-finite output")
                    del out
                    times = []
                    for _ in range(reps):
                        start.record()
                        F.scaled_dot_product_attention(q, k_in, v_in, is_causal=True, **kwargs)
                        stop.record()
                        stop.synchronize()
                        times.append(start.elapsed_time(stop) / 1e3)
                t = statistics.median(times)
                entry = {"ms": t * 1e3, "tflops": flops / t / 1e12, "gqa": gqa}
                break
            except Exception as e:  # noqa: BLE001 - a backend may refuse a shape
                entry = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
            finally:
                k_in = v_in = None
                torch.cuda.empty_cache()
        result["backends"][name] = entry
    return result


def backend_cells(shape, metric):
    """One table cell per SDPA backend (its `metric`, "refused" where it refused the shape) and
    the best backend's value."""
    cells, best = [], 0.0
    for name, _ in BACKENDS:
        e = shape["backends"][name]
        if metric in e:
            mark = "" if e["gqa"] == "native" else " (expanded K/V)"
            cells.append(f"{e[metric]:.0f}{mark}")
            best = max(best, e[metric])
        else:
            cells.append("refused")
    return cells, best


def prefill_main(args):
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "prefill": [bench_prefill_shape(t, qh, kh, args.reps)
                          for t, qh, kh in PREFILL_SHAPES]}
    print(json.dumps(report, indent=1))
    if not args.ours_prefill:
        return
    ours = {}
    with open(args.ours_prefill) as f:
        next(f)
        for line in f:
            q_len, kv_len, qh, kh, ms, tflops, best_tiling, best_tflops = line.strip().split(",")
            if q_len == kv_len:
                ours[(int(q_len), int(qh), int(kh))] = (float(ms), float(tflops), best_tiling,
                                                        float(best_tflops))
    print(f"\n{report['device']}, torch {report['torch']}; causal prefill, batch 1, head dim 128, "
          "bf16; TFLOP/s = 4 * 128 * query heads * L^2/2 / time\n")
    print("| tokens | query / KV heads | spin ms | spin TFLOP/s | SDPA flash TFLOP/s | "
          "SDPA cuDNN TFLOP/s | SDPA efficient TFLOP/s | spin / best SDPA | best spin tiling "
          "(TFLOP/s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for s in report["prefill"]:
        cells, best = backend_cells(s, "tflops")
        ms, tflops, best_tiling, best_tflops = ours.get(
            (s["tokens"], s["q_heads"], s["kv_heads"]), (float("nan"),) * 2 + ("?", float("nan")))
        ratio = tflops / best if best > 0 else float("nan")
        print(f"| {s['tokens'] // 1024}K | {s['q_heads']} / {s['kv_heads']} | {ms:.2f} | "
              f"{tflops:.0f} | {' | '.join(cells)} | {ratio:.2f} | {best_tiling} "
              f"({best_tflops:.0f}) |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="calls per timed graph")
    ap.add_argument("--reps", type=int, default=20, help="timed replays (median)")
    ap.add_argument("--ours", help="CSV from spin bench gpu --attention-csv")
    ap.add_argument("--prefill", action="store_true",
                    help="time causal prefill (PREFILL_SHAPES) instead of decode")
    ap.add_argument("--ours-prefill", help="CSV from spin bench gpu --prefill-csv (with --prefill)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("sdpa_bench: no CUDA device")
    if args.prefill:
        prefill_main(args)
        return
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "d2d_gbps": d2d_gbps(args.reps),
              "shapes": [bench_shape(b, l, args.runs, args.reps) for b, l in SHAPES]}
    print(json.dumps(report, indent=1))
    if args.ours:
        ours = {}
        with open(args.ours) as f:
            next(f)
            for line in f:
                b, l, us, gbps, d2d = line.strip().split(",")
                ours[(int(b), int(l))] = (float(us), float(gbps), float(d2d))
        print(f"\n{report['device']}, torch {report['torch']}; D2D copy (torch) "
              f"{report['d2d_gbps']:.0f} GB/s\n")
        print("| batch × KV tokens | spin dense µs | spin GB/s | SDPA flash GB/s | "
              "SDPA cuDNN GB/s | SDPA efficient GB/s | spin / best SDPA |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for s in report["shapes"]:
            key = (s["batch"], s["kv_tokens"])
            cells, best = backend_cells(s, "gbps")
            us, gbps, _ = ours.get(key, (float("nan"),) * 3)
            ratio = gbps / best if best > 0 else float("nan")
            label = f"{s['batch']} × {s['kv_tokens'] // 1024}K"
            print(f"| {label} | {us:.1f} | {gbps:.0f} | {' | '.join(cells)} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
