#include "sim/cli/command.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>
#include <new>

#include "common/error.h"
#include "common/text.h"
#include "common/version.h"

namespace po = boost::program_options;

namespace spin::cli {
namespace {

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < s.size()) {
    const size_t j = s.find(' ', i);
    words.push_back(s.substr(i, j == std::string::npos ? std::string::npos : j - i));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return words;
}

// The command whose name is the longest prefix of args, and how many words it took.
std::pair<const Command*, size_t> match(const Registry& reg, const Args& args) {
  const Command* best = nullptr;
  size_t best_words = 0;
  for (const Command& c : reg.commands()) {
    const auto words = split_words(c.name);
    if (words.size() <= best_words || words.size() > args.size()) continue;
    if (std::equal(words.begin(), words.end(), args.begin())) {
      best = &c;
      best_words = words.size();
    }
  }
  return {best, best_words};
}

// Help text fits in this many columns.
constexpr size_t kHelpColumns = 96;

// One line of help text wrapped at spaces to kHelpColumns; continuation lines start with `hang`
// spaces. A word longer than the room left stays whole.
std::string wrap_line(std::string_view line, size_t hang) {
  std::string out;
  size_t column = 0;
  size_t i = 0;
  while (i < line.size()) {
    const size_t end = std::min(line.find(' ', i + 1), line.size());  // a word with its space
    const std::string_view word = line.substr(i, end - i);
    if (column > hang && column + word.size() > kHelpColumns) {
      out += '\n';
      out.append(hang, ' ');
      column = hang;
      const size_t first = word.find_first_not_of(' ');  // spaces only: nothing to carry
      const std::string_view bare = first == std::string_view::npos ? "" : word.substr(first);
      out += bare;
      column += bare.size();
    } else {
      out += word;
      column += word.size();
    }
    i = end;
  }
  return out;
}

// Help text wrapped line by line; a wrapped line's continuations keep its indentation.
std::string wrap(std::string_view text) {
  std::string out;
  for (size_t i = 0; i <= text.size();) {
    const size_t end = std::min(text.find('\n', i), text.size());
    const std::string_view line = text.substr(i, end - i);
    const size_t indent = std::min(line.find_first_not_of(' '), line.size());
    out += wrap_line(line, indent);
    if (end < text.size()) out += '\n';
    i = end + 1;
  }
  return out;
}

void print_help(const Registry& reg, std::ostream& out) {
  out << wrap(fmt::format(
      "spin {}: sparse attention over a hierarchical KV cache (HBM over host memory), simulated "
      "and executed.\n\n"
      "Usage: spin <command> [options]     (spin <command> --help explains each option)\n"
      "       spin --list <family>          list registered names of a family\n"
      "       spin --version\n\nCommands:\n",
      version()));
  size_t width = 0;
  for (const Command& c : reg.commands()) width = std::max(width, c.name.size());
  for (const Command& c : reg.commands()) {
    out << wrap_line(fmt::format("  {:<{}}  {}", c.name, width, c.summary), width + 4) << "\n";
  }
  out << "\nList families (spin --list <family>):\n";
  for (const ListFamily& f : reg.families())
    out << wrap_line(fmt::format("  {:<{}}  {}", f.name, width, f.summary), width + 4) << "\n";
}

int print_list(const Registry& reg, const std::string& family) {
  std::vector<std::string> known;
  for (const ListFamily& f : reg.families()) {
    known.push_back(f.name);
    if (f.name != family) continue;
    const auto entries = f.entries();
    size_t width = 0;
    for (const auto& e : entries) width = std::max(width, e.first.size());
    for (const auto& e : entries)
      std::cout << fmt::format("{:<{}}  {}\n", e.first, width, e.second);
    return 0;
  }
  const auto close = closest_match(family, known);
  throw InputError(fmt::format("spin --list: unknown family '{}'{}; known families: {}", family,
                               close ? fmt::format(" (did you mean '{}'?)", *close) : "",
                               fmt::join(known, ", ")));
}

int dispatch(const Registry& reg, const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_help(reg, std::cout);
    return 0;
  }
  if (args[0] == "--version") {
    if (args.size() > 1) throw InputError("spin --version: expected no arguments after it");
    std::cout << fmt::format("spin {} (commit {})\n", version(), git_commit());
    return 0;
  }
  if (args[0] == "--list") {
    if (args.size() != 2)
      throw InputError("spin --list: expected one family name, e.g. spin --list models");
    return print_list(reg, args[1]);
  }
  const auto [command, words] = match(reg, args);
  if (command == nullptr) {
    // A group name alone ("spin trace") lists the group's commands.
    std::vector<std::string> group;
    for (const Command& c : reg.commands()) {
      if (c.name.rfind(args[0] + " ", 0) == 0)
        group.push_back(fmt::format("  {:<16} {}", c.name, c.summary));
    }
    if (!group.empty() && (args.size() == 1 || args[1].rfind("-", 0) == 0)) {
      throw InputError(fmt::format("spin {}: a command is missing; choose one of:\n{}", args[0],
                                   fmt::join(group, "\n")));
    }
    // A typo of a command of the group typed, or of a command or group name.
    std::vector<std::string> names;
    for (const Command& c : reg.commands()) {
      names.push_back(c.name);
      if (const size_t space = c.name.find(' '); space != std::string::npos)
        names.push_back(c.name.substr(0, space));
    }
    const std::string typed = !group.empty() && args.size() > 1 ? args[0] + " " + args[1] : args[0];
    throw InputError(
        fmt::format("unknown command '{}'; run spin --help for the list{}",
                    fmt::join(args.begin(), args.begin() + std::min<size_t>(args.size(), 2), " "),
                    did_you_mean(typed, names)));
  }
  return command->run(Args(args.begin() + static_cast<std::ptrdiff_t>(words), args.end()));
}

// Boost reads "-1" for an unsigned option as 2^32 − 1 (or 2^64 − 1): a count, size or thread
// number given a negative value is an error instead.
void reject_negative_counts(const po::parsed_options& parsed, const po::options_description& all,
                            std::string_view name) {
  for (const po::option& option : parsed.options) {
    const po::option_description* d = all.find_nothrow(option.string_key, false);
    if (d == nullptr) continue;
    const po::value_semantic* semantic = d->semantic().get();
    const bool counts =
        dynamic_cast<const po::typed_value<unsigned>*>(semantic) != nullptr ||
        dynamic_cast<const po::typed_value<unsigned long>*>(semantic) != nullptr ||
        dynamic_cast<const po::typed_value<std::vector<unsigned>>*>(semantic) != nullptr;
    if (!counts) continue;
    for (const std::string& value : option.value) {
      const std::size_t first = value.find_first_not_of(" \t");
      if (first != std::string::npos && value[first] == '-') {
        throw InputError(fmt::format(
            "spin {}: --{}: expected a non-negative integer, got '{}'; see spin {} --help", name,
            option.string_key, value, name));
      }
    }
  }
}

}  // namespace

int run_cli(const Args& args) {
  // The error after whatever the command printed; returns the exit status.
  const auto report = [](std::string_view kind, const std::exception& e, int status) {
    std::cout.flush();
    std::cerr << "spin: " << kind << ": " << e.what() << "\n";
    return status;
  };
  try {
    Registry reg;
    register_commands(reg);
    const int status = dispatch(reg, args);
    // A write to a full disk or a closed pipe fails quietly: the results would be lost unnoticed.
    std::cout.flush();
    if (!std::cout) throw InputError("cannot write the output to standard output");
    return status;
  } catch (const InputError& e) {
    return report("error", e, 2);
  } catch (const std::filesystem::filesystem_error& e) {
    // A path the user gave that cannot be read, created or written (it names the path and why).
    return report("error", e, 2);
  } catch (const std::bad_alloc&) {
    // The workload needs more memory than the machine gives (e.g. a cache sized for a context of
    // 10^9 tokens): not a bug, but nothing here can say which allocation it was.
    std::cout.flush();
    std::cerr << "spin: error: out of memory: the run needs more memory than this machine gives "
                 "it; try fewer requests or layers, shorter contexts, stream sampling "
                 "(sim.stream_sampling) or fewer --threads\n";
    return 3;
  } catch (const InvariantError& e) {
    // A broken invariant: a bug in spin, or in a policy or algorithm someone added to it.
    return report(
        "internal error (please report it; if you changed or added a policy, docs/policy.md "
        "\"Adding a policy\" gives its contract)",
        e, 70);
  } catch (const std::exception& e) {
    return report("internal error (please report)", e, 70);
  }
}

namespace {

// The option `option` (as Boost names it: "--file") without its dashes, if it takes a positional
// argument.
std::optional<std::string> positional_name(const po::positional_options_description& positional,
                                           std::string option) {
  option.erase(0, option.find_first_not_of('-'));
  const unsigned positions = positional.max_total_count();
  for (unsigned i = 0; i < positions && i < 16; ++i) {
    if (positional.name_for_position(i) == option) return option;
  }
  return std::nullopt;
}

}  // namespace

std::optional<po::variables_map> parse_options(const Args& args, std::string_view name,
                                               std::string_view synopsis, std::string_view about,
                                               const po::options_description& options,
                                               const po::positional_options_description& positional,
                                               const po::options_description& hidden) {
  po::options_description general("General");
  general.add_options()("help,h", "print this help and exit");
  po::options_description visible;
  if (!options.options().empty()) visible.add(options);
  visible.add(general);
  po::options_description all;
  all.add(visible).add(hidden);
  po::variables_map vm;
  try {
    const po::parsed_options parsed =
        po::command_line_parser(args).options(all).positional(positional).run();
    reject_negative_counts(parsed, all, name);
    po::store(parsed, vm);
    if (vm.count("help")) {
      const std::string usage = fmt::format("Usage: spin {} ", name);
      std::cout << wrap_line(usage + std::string(synopsis), usage.size()) << "\n\n"
                << wrap(about) << "\n"
                << visible << "\n";
      return std::nullopt;
    }
    po::notify(vm);
  } catch (const po::required_option& e) {
    // A missing positional argument: its option name (--file) is not what the usage line shows.
    if (positional_name(positional, e.get_option_name())) {
      throw InputError(
          fmt::format("spin {}: an argument is missing; usage: spin {} {}", name, name, synopsis));
    }
    throw InputError(fmt::format("spin {}: {}; see spin {} --help", name, e.what(), name));
  } catch (const po::unknown_option& e) {
    std::vector<std::string> names;
    for (const auto& o : visible.options()) {
      if (!o->long_name().empty()) names.push_back("--" + o->long_name());
    }
    throw InputError(fmt::format("spin {}: {}; see spin {} --help{}", name, e.what(), name,
                                 did_you_mean(e.get_option_name(), names)));
  } catch (const po::too_many_positional_options_error&) {
    throw InputError(
        fmt::format("spin {}: too many arguments; usage: spin {} {}", name, name, synopsis));
  } catch (const po::multiple_occurrences& e) {
    // A positional argument given also as its option (replay A --trace B), or twice.
    if (const auto option = positional_name(positional, e.get_option_name())) {
      throw InputError(fmt::format(
          "spin {}: --{} is given twice (the positional argument is --{} too: give one); usage: "
          "spin {} {}",
          name, *option, *option, name, synopsis));
    }
    throw InputError(fmt::format("spin {}: {}; see spin {} --help", name, e.what(), name));
  } catch (const po::error& e) {
    throw InputError(fmt::format("spin {}: {}; see spin {} --help", name, e.what(), name));
  }
  return vm;
}

unsigned thread_count(const po::variables_map& vm, const std::string& option,
                      std::string_view name) {
  const unsigned threads = vm[option].as<unsigned>();
  if (threads < 1 || threads > kMaxThreads) {
    throw InputError(
        fmt::format("spin {}: --{}: expected 1 to {}, got {}", name, option, kMaxThreads, threads));
  }
  return threads;
}

void require_at_least(std::string_view name, std::string_view option, std::int64_t value,
                      std::int64_t least) {
  if (value < least) {
    throw InputError(
        fmt::format("spin {}: --{}: expected at least {}, got {}", name, option, least, value));
  }
}

namespace {

// A shorthand's override as the config loader takes it ("cache.policy=\"lru\"") and as typed
// ("--policy lru"); nullopt when the option was not given.
struct ShorthandOverride {
  std::string set;
  std::string typed;
};

std::optional<ShorthandOverride> shorthand_override(const po::variables_map& vm,
                                                    const Shorthand& shorthand) {
  const auto& [option, key, literal] = shorthand;
  if (!vm.count(option)) return std::nullopt;
  const boost::any& value = vm[option].value();
  std::string text;
  if (const auto* s = boost::any_cast<std::string>(&value)) text = *s;
  if (const auto* u = boost::any_cast<std::uint32_t>(&value)) text = std::to_string(*u);
  if (const auto* u = boost::any_cast<std::uint64_t>(&value)) text = std::to_string(*u);
  if (const auto* d = boost::any_cast<double>(&value)) text = fmt::format("{}", *d);
  // As typed, in single quotes where the value would not read as one word ("--mode 'spin:'").
  const bool word = !text.empty() && text.back() != ':' && std::ranges::all_of(text, [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view("_.:/+-").find(c) != std::string_view::npos;
  });
  return ShorthandOverride{
      fmt::format("{}={}", key, literal ? yaml_quoted(text) : text),
      word ? fmt::format("--{} {}", option, text) : fmt::format("--{} '{}'", option, text)};
}

// `e` named as typed if it is about override `set`; else nullopt.
std::optional<InputError> renamed(const InputError& e, std::string_view set,
                                  std::string_view typed) {
  const std::string prefix = fmt::format("--set {}:", set);
  const std::string_view what = e.what();
  if (!what.starts_with(prefix)) return std::nullopt;
  return InputError(fmt::format("{}:{}", typed, what.substr(prefix.size())));
}

}  // namespace

std::vector<std::string> overrides_with_shorthands(const po::variables_map& vm,
                                                   std::span<const Shorthand> shorthands) {
  std::vector<std::string> sets;
  for (const Shorthand& shorthand : shorthands) {
    if (const auto o = shorthand_override(vm, shorthand)) sets.push_back(o->set);
  }
  if (vm.count("set"))
    std::ranges::copy(vm["set"].as<std::vector<std::string>>(), std::back_inserter(sets));
  return sets;
}

InputError named_as_typed(const InputError& e, std::string_view set, std::string_view typed) {
  return renamed(e, set, typed).value_or(e);
}

InputError named_as_typed(const InputError& e, const po::variables_map& vm,
                          std::span<const Shorthand> shorthands) {
  for (const Shorthand& shorthand : shorthands) {
    if (const auto o = shorthand_override(vm, shorthand)) {
      if (auto r = renamed(e, o->set, o->typed)) return *r;
    }
  }
  return e;
}

}  // namespace spin::cli
