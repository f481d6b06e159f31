// Serving modes: the systems a study compares (DESIGN.md §5; docs/simulator.md lists each mode's
// mechanisms and their sources).
//
// A mode is written `KIND` or `KIND:ALGORITHM`: `dense`, `dense-offload`,
// `sparse-original:<algo>`, `spin:<algo>`, `oracle:<algo>` and `ideal:<algo>`, where <algo> is one
// of shadowkv, retroinfer, seer, quest, token and must be an algorithm the trace was recorded
// with. Dense modes read no selections.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace spin::serving {

enum class ModeKind {
  kDense,           // all KV in HBM, full attention; preemption recomputes (vLLM)
  kDenseOffload,    // all KV in HBM, full attention; preemption swaps KV to host (vLLM + offload)
  kSparseOriginal,  // the algorithm's original system (its own KV home, fetch path and cache)
  kSpin,            // KV on host, HBM page cache (bucketed LRU), one gather kernel per layer
  kOracle,          // as spin, with the Belady cache (the policy bound)
  kIdeal,           // as oracle, with transfers that cost no time (the envelope)
};

struct Mode {
  ModeKind kind = ModeKind::kSpin;
  std::string algorithm;  // empty for dense modes

  bool sparse() const { return kind != ModeKind::kDense && kind != ModeKind::kDenseOffload; }
  // KV lives in host memory and HBM caches it (spin, oracle, ideal, and the originals of
  // shadowkv and retroinfer).
  bool kv_on_host() const;
  std::string name() const;
};

// Parses "spin:shadowkv"; throws InputError naming the text and what was expected.
Mode parse_mode(std::string_view text);

// Whether `text` parses (for config checks).
bool is_mode(std::string_view text);

// What parse_mode expected where `text` is no mode ("spin:<algo> with <algo> one of ..."); empty
// for a mode.
std::string mode_expected(std::string_view text);

// Every mode's full name ("dense", ..., "ideal:token"), for suggestions.
std::vector<std::string> mode_names();

// The mode kinds with a one-line description each (spin --list modes). The algorithms a mode may
// name are the trace generators' (gen::algorithm_names()).
struct ModeInfo {
  std::string_view name;
  std::string_view description;
};
std::span<const ModeInfo> mode_kinds();

}  // namespace spin::serving
