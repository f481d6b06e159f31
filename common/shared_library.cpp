#include "common/shared_library.h"

#include <dlfcn.h>
#include <fmt/format.h>
#include <glob.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <utility>

#include "common/error.h"

namespace spin {

std::vector<std::string> expand_library_candidate(const std::string& candidate) {
  if (candidate.find_first_of("*?[") == std::string::npos) return {candidate};  // dlopen says why
  glob_t g{};
  std::vector<std::string> out;
  if (glob(candidate.c_str(), 0, nullptr, &g) == 0) {
    for (std::size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  }
  globfree(&g);
  std::sort(out.begin(), out.end(), std::greater<>());
  return out;
}

SharedLibrary SharedLibrary::open(const LibrarySearch& search) {
  std::vector<std::string> candidates;
  for (const std::string& c : search.candidates)  // each once, in order
    if (std::find(candidates.begin(), candidates.end(), c) == candidates.end())
      candidates.push_back(c);
  std::string source = "";
  const char* env = search.env_var.empty() ? nullptr : std::getenv(search.env_var.c_str());
  if (env != nullptr && env[0] != '\0') {
    candidates = {env};
    source = search.env_var + "=";
  }
  std::string tried;
  for (const std::string& candidate : candidates) {
    // The override is taken literally; the search's patterns are expanded.
    const std::vector<std::string> paths =
        source.empty() ? expand_library_candidate(candidate) : std::vector<std::string>{candidate};
    if (paths.empty()) {
      tried += fmt::format("\n  {}{}: no match", source, candidate);
      continue;
    }
    for (const std::string& path : paths) {
      dlerror();
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) {
        const char* why = dlerror();
        tried += fmt::format("\n  {}{}: {}", source, path, why ? why : "dlopen failed");
        continue;
      }
      const std::string rejected = search.accept ? search.accept(handle) : std::string();
      if (!rejected.empty()) {
        dlclose(handle);
        tried += fmt::format("\n  {}{}: {}", source, path, rejected);
        continue;
      }
      SharedLibrary lib;
      lib.handle_ = handle;
      lib.path_ = path;
      return lib;
    }
  }
  std::string message = fmt::format("cannot load {}; tried:{}", search.what, tried);
  if (!search.env_var.empty()) {
    message += env != nullptr && env[0] != '\0'
                   ? fmt::format(
                         "\n{} is set, so nothing else was tried; unset it to search the "
                         "usual places, or point it at the library",
                         search.env_var)
                   : fmt::format("\nset {}=/path/to/the/library to choose one", search.env_var);
  }
  if (!search.hint.empty()) message += "\n" + search.hint;
  throw InputError(message);
}

SharedLibrary::~SharedLibrary() {
  if (handle_ != nullptr) dlclose(handle_);
}

SharedLibrary& SharedLibrary::operator=(SharedLibrary&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr) dlclose(handle_);
    handle_ = std::exchange(other.handle_, nullptr);
    path_ = std::move(other.path_);
  }
  return *this;
}

void* SharedLibrary::symbol(const char* name) const {
  if (handle_ == nullptr) throw InvariantError("SharedLibrary::symbol on a library not opened");
  dlerror();
  void* address = dlsym(handle_, name);
  if (address == nullptr) {
    const char* why = dlerror();
    throw InputError(
        fmt::format("{}: symbol {} not found ({})", path_, name, why ? why : "null address"));
  }
  return address;
}

}  // namespace spin
