// Output files and folders: writing a file so that nothing half-written is ever at its path (a
// run's resolved config, JSON results: the contents go to FILE.tmp in the same folder, which is
// then renamed over FILE), creating an output folder, and refusing an output that is the input.
#pragma once

#include <filesystem>
#include <string_view>

namespace spin {

// Throws InputError "cannot write <what> to '<path>': <reason>" and leaves no temporary file.
void write_file_atomically(const std::filesystem::path& file, std::string_view contents,
                           std::string_view what);

// Creates folder `dir` and its parents where missing. Throws InputError "cannot create <what>
// '<dir>': <reason>" where that fails, e.g. where `dir` is a file.
void create_output_folder(const std::filesystem::path& dir, std::string_view what);

// Throws InputError "<option> <output> is the input file ..." where `output` names the same
// file as `input` (writing it would destroy the input while it is read).
void refuse_input_as_output(const std::filesystem::path& input, const std::filesystem::path& output,
                            std::string_view option);

}  // namespace spin
