// The program's version and the git commit it was built from (DESIGN.md §7 provenance).
#pragma once

#include <string_view>

namespace spin {

std::string_view version();     // e.g. "0.1.0"
std::string_view git_commit();  // `git describe --always --dirty` at build time, or "unknown"

}  // namespace spin
