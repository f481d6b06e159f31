"""Selection rules of the captured algorithms, applied to real queries and keys.

Semantics follow DESIGN.md §4.1/§5 and the trace spec (traces/README.md); the static region and
the budget are computed exactly as the trace generators do (docs/trace-generators.md,
"Semantics"), so a captured trace and a generated one mean the same thing:

- decode step ``s`` of a request with ``P`` prompt tokens sees a context of ``C = P + s`` tokens
  (the keys of the token being decoded are the step's own and always attended);
- fixed partitions: partition ``i`` covers tokens ``[i*g, (i+1)*g)``;
- the static region (sinks, local window, unfinished last page; in pages, as
  ``policy::make_static_region``) is never selected; the dynamic partitions are those that touch
  no static page, ``[lo, hi)``;
- the budget counts dynamic partitions: ``k = min(ceil((budget_tokens + budget_ratio*C) / g),
  hi - lo)``;
- scores (per query head ``j`` of the KV head's group, keys ``K`` of the KV head):
  ``quest``: ``sum_d max(q_jd * min_k[d], q_jd * max_k[d])`` over each page's element-wise key
  minimum and maximum; ``shadowkv``: ``q_j . mean_key``; ``token``: ``q_j . k_t``;
- GQA: the scores of the query heads of a group are reduced to one score per partition, by
  ``sum`` (default; the same order as the mean) or ``max``, so each KV head gets one selection;
- the ``k`` best partitions are selected (ties: the lower id wins), written ascending.

Scores are computed in float64 whatever the model's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch


class CaptureError(Exception):
    """Bad input or an unsupported model: the message says where and what was expected."""


@dataclass(frozen=True)
class AlgorithmSpec:
    """One algorithm entry of the trace header (traces/README.md, "Algorithm")."""

    name: str
    partition_tokens: int  # g
    page_tokens: int  # a power of two
    budget_ratio: float  # fraction of the context
    budget_tokens: int
    sink_tokens: int
    local_window_tokens: int
    score: str  # quest | shadowkv | token

    def header_entry(self) -> dict:
        return {
            "name": self.name,
            "partition": "fixed",
            "partition_tokens": self.partition_tokens,
            "page_tokens": self.page_tokens,
            "budget_ratio": self.budget_ratio,
            "budget_tokens": self.budget_tokens,
            "sink_tokens": self.sink_tokens,
            "local_window_tokens": self.local_window_tokens,
            "reindex_interval_tokens": 0,
        }

    def validate(self) -> "AlgorithmSpec":
        where = f"algorithm {self.name}"
        if self.partition_tokens < 1:
            raise CaptureError(f"{where}: partition tokens must be >= 1, got {self.partition_tokens}")
        p = self.page_tokens
        if p < 1 or (p & (p - 1)) != 0:
            raise CaptureError(f"{where}: page tokens must be a power of two >= 1, got {p}")
        if not (0.0 <= self.budget_ratio <= 1.0):
            raise CaptureError(f"{where}: the budget ratio must be in [0, 1], got {self.budget_ratio}")
        if self.budget_tokens < 0 or self.sink_tokens < 0 or self.local_window_tokens < 0:
            raise CaptureError(f"{where}: budget, sink and local-window tokens must be >= 0")
        if self.budget_tokens == 0 and self.budget_ratio == 0.0:
            raise CaptureError(f"{where}: the budget is zero (neither tokens nor a ratio)")
        if self.score == "token" and self.partition_tokens != 1:
            raise CaptureError(f"{where}: token-level selection needs partition tokens = 1, got "
                               f"{self.partition_tokens}")
        if self.score == "quest" and self.partition_tokens < 2:
            raise CaptureError(f"{where}: Quest pages need partition tokens >= 2 (min/max bounds), "
                               f"got {self.partition_tokens}")
        return self


# Defaults: the same geometry as the trace generators (traces/gen/config.cpp,
# docs/trace-generators.md "Algorithms").
DEFAULTS = {
    "quest": AlgorithmSpec("quest", 16, 16, 0.0, 2048, 0, 16, "quest"),
    "shadowkv": AlgorithmSpec("shadowkv", 8, 8, 0.0156, 0, 16, 64, "shadowkv"),
    "token": AlgorithmSpec("token", 1, 16, 0.0, 2048, 0, 0, "token"),
}

GQA_REDUCTIONS = ("sum", "max")


def algorithm(name: str, **overrides) -> AlgorithmSpec:
    if name not in DEFAULTS:
        raise CaptureError(f"unknown algorithm '{name}'; known: {', '.join(DEFAULTS)}")
    return replace(DEFAULTS[name], **overrides).validate()


def static_pages(spec: AlgorithmSpec, context: int) -> tuple[int, int]:
    """(sink_end_page, local_begin_page) of a stream holding `context` tokens, as
    policy::make_static_region: a page p is static iff p < sink_end or p >= local_begin."""
    page = spec.page_tokens
    sinks = min(spec.sink_tokens, context)
    local_start = context - spec.local_window_tokens if context > spec.local_window_tokens else 0
    local_begin = local_start // page
    full_pages = context // page
    local_begin = min(local_begin, full_pages)  # the unfinished last page is static
    sink_end = (sinks + page - 1) // page
    return sink_end, local_begin


def dynamic_range(spec: AlgorithmSpec, context: int) -> tuple[int, int]:
    """The partitions [lo, hi) that touch no static page (as the generators' dynamic_range)."""
    sink_end, local_begin = static_pages(spec, context)
    lo_token = sink_end * spec.page_tokens
    hi_token = max(lo_token, local_begin * spec.page_tokens)
    g = spec.partition_tokens
    lo = (lo_token + g - 1) // g
    hi = max(hi_token // g, lo)
    return lo, hi


def budget_partitions(spec: AlgorithmSpec, context: int) -> int:
    tokens = spec.budget_tokens + spec.budget_ratio * float(context)
    return int(math.ceil(tokens / spec.partition_tokens))


def partition_scores(spec: AlgorithmSpec, queries: torch.Tensor, keys: torch.Tensor, lo: int,
                     hi: int, reduce: str) -> torch.Tensor:
    """Scores of partitions [lo, hi) for each KV head.

    queries: [H, G, d] (the G query heads of each of H KV heads), keys: [H, >= hi*g, d].
    Returns [H, hi - lo] float64.
    """
    g = spec.partition_tokens
    q = queries.to(torch.float64)
    k = keys[:, lo * g:hi * g].to(torch.float64)
    heads, group, dim = q.shape
    n = hi - lo
    if spec.score == "token":
        scores = torch.einsum("hgd,hnd->hgn", q, k)
    elif spec.score == "shadowkv":
        means = k.reshape(heads, n, g, dim).mean(dim=2)
        scores = torch.einsum("hgd,hnd->hgn", q, means)
    elif spec.score == "quest":
        blocks = k.reshape(heads, n, g, dim)
        kmin = blocks.amin(dim=2)
        kmax = blocks.amax(dim=2)
        scores = torch.empty(heads, group, n, dtype=torch.float64, device=q.device)
        for h in range(heads):  # one head at a time bounds the [G, n, d] temporaries
            qh = q[h][:, None, :]
            scores[h] = torch.maximum(qh * kmin[h][None], qh * kmax[h][None]).sum(dim=-1)
    else:
        raise CaptureError(f"unknown score rule '{spec.score}'")
    if reduce == "sum":
        return scores.sum(dim=1)
    if reduce == "max":
        return scores.amax(dim=1)
    raise CaptureError(f"unknown GQA reduction '{reduce}'; known: {', '.join(GQA_REDUCTIONS)}")


def select(spec: AlgorithmSpec, queries: torch.Tensor, keys: torch.Tensor, context: int,
           reduce: str) -> list[list[int]]:
    """One decode step's selections: one ascending id list per KV head.

    queries: [H, G, d] of the step's token; keys: [H, >= context, d] (only the first `context`
    tokens are scored; the step's own token is the last one and is always attended).
    """
    lo, hi = dynamic_range(spec, context)
    k = min(budget_partitions(spec, context), hi - lo)
    heads = queries.shape[0]
    if k <= 0:
        return [[] for _ in range(heads)]
    if k == hi - lo:
        return [list(range(lo, hi)) for _ in range(heads)]
    scores = partition_scores(spec, queries, keys, lo, hi, reduce)
    # Descending and stable: among equal scores the lower id comes first.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    chosen = torch.sort(order, dim=1).values + lo
    return chosen.cpu().tolist()
