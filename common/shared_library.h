// SharedLibrary: a shared library opened at run time (dlopen), for optional dependencies that
// `spin` must be able to start without: the executor's cuBLASLt (exec/cublaslt.h) is the first.
// The binary links none of them, so it starts on machines that lack them, and only the command
// that needs one fails, saying what it looked for.
//
// A LibrarySearch names what is looked for, an environment variable that overrides the search,
// and candidates tried in order:
// - a bare file name ("libcublasLt.so.13") goes to dlopen as it is, so the dynamic loader's own
//   search applies (LD_LIBRARY_PATH, the ldconfig cache, the default directories);
// - a path goes to dlopen as it is too, unless it holds glob(3) wildcards
//   ("/usr/local/cuda*/lib64/libcublasLt.so.13"): then its matches are tried in descending name
//   order (cuda-13.1 before cuda-13.0). Repeated candidates are tried once.
// When the variable is set (and not empty), its value, taken literally, is the only candidate. A
// candidate that opens but that `accept` rejects (e.g. a wrong major version) is closed and the
// search goes on.
// If nothing is accepted, open() throws InputError naming every candidate tried and why each
// failed (dlerror's text, "no match" for a pattern, or accept's reason), and how to override.
//
// The library stays open while the SharedLibrary lives (dlclose in the destructor); movable, not
// copyable. Not thread-safe by itself: callers that share one load it once (e.g. a function-local
// static).
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace spin {

struct LibrarySearch {
  std::string what;                     // for messages, e.g. "cuBLASLt (CUDA 13)"
  std::string env_var;                  // overrides the candidates when set, e.g. "SPIN_CUBLASLT"
  std::vector<std::string> candidates;  // bare names or absolute paths / glob patterns, in order
  // Checks an opened library (its dlopen handle); returns "" to accept it, else the reason.
  std::function<std::string(void* handle)> accept;
  std::string hint;  // appended to the failure message, e.g. where the library usually lives
};

class SharedLibrary {
 public:
  // Opens the first acceptable candidate; throws InputError (common/error.h) if none is.
  static SharedLibrary open(const LibrarySearch& search);

  SharedLibrary() = default;
  ~SharedLibrary();
  SharedLibrary(SharedLibrary&& other) noexcept { *this = std::move(other); }
  SharedLibrary& operator=(SharedLibrary&& other) noexcept;
  SharedLibrary(const SharedLibrary&) = delete;
  SharedLibrary& operator=(const SharedLibrary&) = delete;

  // The symbol's address; throws InputError naming the library and the symbol if it is missing.
  void* symbol(const char* name) const;
  // Resolves `name` into a typed function pointer: lib.resolve(fn_ptr, "cublasLtCreate").
  template <class Fn>
  void resolve(Fn*& out, const char* name) const {
    out = reinterpret_cast<Fn*>(symbol(name));
  }

  void* handle() const { return handle_; }
  // The candidate that was opened, as given (bare name) or as matched (path).
  const std::string& path() const { return path_; }

 private:
  void* handle_ = nullptr;
  std::string path_;
};

// The candidates a pattern expands to: itself when it holds no wildcard (*, ?, [), else its
// glob(3) matches in descending name order (empty when nothing matches).
std::vector<std::string> expand_library_candidate(const std::string& candidate);

}  // namespace spin
