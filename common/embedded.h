// Files compiled into the binary: model presets, hardware profiles and the bundled default
// config (configs/), so that `build/spin` runs anywhere, the GPU machine included, without the
// source tree. The table is generated at build time by scripts/embed_files.py from the list in
// configs/meson.build.
#pragma once

#include <optional>
#include <span>
#include <string_view>

namespace spin {

struct EmbeddedFile {
  std::string_view name;  // path relative to the source root, e.g. "configs/models/qwen3-14b.yaml"
  std::string_view contents;
};

std::span<const EmbeddedFile> embedded_files();  // sorted by name

// The contents of an embedded file, or nullopt.
std::optional<std::string_view> embedded_file(std::string_view name);

}  // namespace spin
