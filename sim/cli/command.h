// The `spin` command line: one binary with subcommands, like git.
//
// Every subcommand is a Command in the table built by register_commands() (sim/cli/registry.cpp,
// explicit calls, no static initialisers). A command's name may have several words
// ("trace info"); the dispatcher matches the longest name that prefixes the arguments. A command
// parses its own options with parse_options(), which handles --help, so every command explains
// itself the same way. Commands write results to std::cout and progress to std::cerr, and throw
// InputError for bad input (printed by run_cli as `spin: error: ...`, exit status 2).
#pragma once

#include <boost/program_options.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace spin::cli {

using Args = std::vector<std::string>;

struct Command {
  std::string name;     // "trace info"
  std::string summary;  // one line, shown in `spin --help`
  std::function<int(const Args&)> run;
};

// A family of named things that `spin --list FAMILY` prints (models, hardware, policies, ...).
struct ListFamily {
  std::string name;
  std::string summary;
  std::function<std::vector<std::pair<std::string, std::string>>()> entries;  // name, description
};

class Registry {
 public:
  void add(Command c) { commands_.push_back(std::move(c)); }
  void add(ListFamily f) { families_.push_back(std::move(f)); }
  const std::vector<Command>& commands() const { return commands_; }
  const std::vector<ListFamily>& families() const { return families_; }

 private:
  std::vector<Command> commands_;
  std::vector<ListFamily> families_;
};

// Fills the registry with every command and list family (sim/cli/registry.cpp).
void register_commands(Registry& registry);

// Runs `spin ARGS...` (args exclude the program name) and returns the exit status. Errors are
// printed to std::cerr; nothing escapes.
int run_cli(const Args& args);

// Parses the arguments of command `name` ("trace info"). `synopsis` follows the name in the usage
// line ("FILE [options]"); `about` is a paragraph printed under it. Positional arguments are
// declared in `positional` and must also appear in `options` or `hidden`. Returns nullopt after
// printing help when --help was given; throws InputError naming the command otherwise.
std::optional<boost::program_options::variables_map> parse_options(
    const Args& args, std::string_view name, std::string_view synopsis, std::string_view about,
    const boost::program_options::options_description& options,
    const boost::program_options::positional_options_description& positional = {},
    const boost::program_options::options_description& hidden = {});

// A thread-count option's value (--threads, --jobs of command `name`): 1 to kMaxThreads, else an
// InputError (a typo of 100000 would start that many threads).
inline constexpr unsigned kMaxThreads = 1024;
unsigned thread_count(const boost::program_options::variables_map& vm, const std::string& option,
                      std::string_view name);

// A count option of command `name` ("bench core") below its least useful value: an InputError
// "spin NAME: --OPTION: expected at least LEAST, got VALUE" (a benchmark of 0 steps would print
// a table of zeros).
void require_at_least(std::string_view name, std::string_view option, std::int64_t value,
                      std::int64_t least);

// A shorthand option: `--OPTION VALUE` stands for `--set KEY=VALUE`.
struct Shorthand {
  const char* option;    // "mode"
  const char* key;       // "serving.mode"
  bool literal = false;  // VALUE is a string as typed (quoted for YAML), e.g. a name
};

// The overrides of a command with shorthand options: KEY=VALUE for each shorthand given, in the
// order of `shorthands`, then the --set values, so that a --set of the same key wins. VALUE is the
// option's value as parsed (a string, an unsigned integer or a double); a literal one is a YAML
// double-quoted string, so that `--mode spin:` is the name 'spin:', not a YAML mapping.
std::vector<std::string> overrides_with_shorthands(const boost::program_options::variables_map& vm,
                                                   std::span<const Shorthand> shorthands);

// An InputError of the config loader about override SET ("--set SET: ..."), named as the user
// typed it: "TYPED: ..." (e.g. "--policy lru2: cache.policy: expected ..."). Other errors are
// returned unchanged.
InputError named_as_typed(const InputError& e, std::string_view set, std::string_view typed);
// The same for the overrides that `shorthands` made of the options in `vm`.
InputError named_as_typed(const InputError& e, const boost::program_options::variables_map& vm,
                          std::span<const Shorthand> shorthands);

}  // namespace spin::cli
