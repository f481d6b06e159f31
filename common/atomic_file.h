// Writing an output file so that nothing half-written is ever at its path (a run's resolved
// config, JSON results): the contents go to FILE.tmp in the same folder, which is then renamed
// over FILE.
#pragma once

#include <filesystem>
#include <string_view>

namespace spin {

// Throws InputError "cannot write <what> to '<path>': <reason>" and leaves no temporary file.
void write_file_atomically(const std::filesystem::path& file, std::string_view contents,
                           std::string_view what);

}  // namespace spin
