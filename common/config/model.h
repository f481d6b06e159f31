// The served model's shapes (config section `model`, presets in configs/models/).
//
// Only what the KV cache, the cost model and the executor's random-weight model need: layer and
// head counts, dimensions and the KV element type. kv_bytes_per_token() and page_bytes() are the
// sizes the rest of the system budgets with (DESIGN.md §2).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "common/config/schema.h"

namespace spin::config {

// Element type of K and V (and of the weights in the executor).
enum class Dtype { kBf16, kFp16, kFp8 };

inline constexpr std::array<EnumName<Dtype>, 3> kDtypeNames = {
    {{Dtype::kBf16, "bf16"}, {Dtype::kFp16, "fp16"}, {Dtype::kFp8, "fp8"}}};
inline std::span<const EnumName<Dtype>> enum_names(Dtype) { return kDtypeNames; }

constexpr std::uint32_t dtype_bytes(Dtype dtype) { return dtype == Dtype::kFp8 ? 1 : 2; }

struct ModelConfig {
  std::string preset;
  std::string description;
  std::uint32_t layers = 0;
  std::uint32_t query_heads = 0;
  std::uint32_t kv_heads = 0;
  std::uint32_t head_dim = 0;
  std::uint32_t hidden_size = 0;
  std::uint32_t intermediate_size = 0;
  std::uint32_t vocab_size = 0;
  Dtype dtype = Dtype::kBf16;

  template <class V>
  void visit(V& v) {
    v.presets(preset, "models");
    v.field("description", description, "one line about the model, shown by spin --list models");
    // The bound of a trace's model (trace::validate_header), so that a config's model is checked
    // before any trace is read.
    v.field("layers", layers, "transformer layers (num_hidden_layers)",
            required().at_least(1).at_most(65535));
    v.field("query_heads", query_heads, "attention query heads per layer (num_attention_heads)",
            required().at_least(1));
    v.field("kv_heads", kv_heads, "KV heads per layer (num_key_value_heads)",
            required().at_least(1).at_most(65535));
    v.field("head_dim", head_dim, "elements per head vector", required().at_least(1));
    v.field("hidden_size", hidden_size, "model (residual stream) width, elements",
            required().at_least(1));
    v.field("intermediate_size", intermediate_size, "MLP inner width, elements",
            required().at_least(1));
    v.field("vocab_size", vocab_size, "vocabulary size, tokens", required().at_least(1));
    v.field("dtype", dtype, "element type of weights and of K and V");
    v.check("kv_heads", "a divisor of query_heads (each KV head serves a group of query heads)",
            [&] { return query_heads % kv_heads == 0; });
  }

  std::uint32_t dtype_bytes() const { return config::dtype_bytes(dtype); }
  // K and V of one token over all layers and KV heads: 2 · layers · kv_heads · head_dim ·
  // dtype_bytes (Qwen3-14B in bf16: 160 KiB).
  std::uint64_t kv_bytes_per_token() const {
    return 2ull * layers * kv_heads * head_dim * dtype_bytes();
  }
  // One page of one stream (request, layer, KV head): K and V of page_tokens tokens.
  std::uint64_t page_bytes(std::uint32_t page_tokens) const {
    return 2ull * page_tokens * head_dim * dtype_bytes();
  }
};

}  // namespace spin::config
