// The config schema: typed structs that declare their YAML keys once (docs/configuration.md).
//
// A config section is a plain struct with defaults in its member initialisers and one member
// template that names every key:
//
//   struct SchedulerConfig {
//     std::uint32_t max_batch = 256;
//     template <class V>
//     void visit(V& v) {
//       v.field("max_batch", max_batch, "most requests decoded in one step", at_least(1));
//     }
//   };
//
// That one declaration drives every visitor below: strict parsing (parse_section), YAML output
// with each key's description as a comment (emit_yaml) and the table of `spin config keys`
// (list_keys). In visit():
//   v.presets(member, "models")   first, for a section that may start from a preset
//                                 (configs/models/NAME.yaml); `member` keeps the preset's name.
//   v.field(key, member, description[, constraints])
//                                 member types: unsigned integers, double, bool, std::string,
//                                 std::filesystem::path (made absolute: relative to the folder of
//                                 the file that gave it, else to the current directory), enums
//                                 with an enum_names() overload found by ADL, std::vector of
//                                 unsigned integers or doubles, and nested sections (a struct
//                                 with its own visit()); std::optional of any of these for a key
//                                 that may be absent (none by default; a null value, `key: ~` or
//                                 `--set key=`, removes what earlier sources gave).
//   v.check(key, expected, predicate)
//                                 a rule over several fields, checked after they are parsed;
//                                 the error says "<key path>: expected <expected>" (`expected`
//                                 is text, or a callable that makes it only when the rule
//                                 fails, for text that takes work such as suggestions), and when
//                                 the key's value came from a preset, which keys were set over
//                                 the preset and where.
// Keys are emitted and listed in declaration order. Descriptions state the unit.
//
// Parsing is strict: an unknown key, a duplicate key, a wrong type, a value out of range or a
// missing required key is an InputError naming where (file:line:column, or the --set option)
// and the key path, and for unknown names the closest valid one. Sources are layered: a
// section's preset, then the config file, then each --set option in order; a later source
// replaces a key's value, and a non-mapping value (e.g. the preset shorthand `model: NAME`)
// replaces everything earlier sources gave for that section.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/error.h"
#include "common/text.h"

namespace spin::config {

// Limits on a field's value (numbers: on the value; lists of numbers: on each element), built
// fluently: required().at_least(1), above(0), at_most(1).
struct Constraints {
  bool is_required = false;            // no default: the key must be given (or come from a preset)
  std::optional<double> min;           // value >= min
  std::optional<double> greater_than;  // value > greater_than
  std::optional<double> max;           // value <= max

  Constraints required() const {
    return with([](Constraints& c) { c.is_required = true; });
  }
  Constraints at_least(double v) const {
    return with([v](Constraints& c) { c.min = v; });
  }
  Constraints above(double v) const {
    return with([v](Constraints& c) { c.greater_than = v; });
  }
  Constraints at_most(double v) const {
    return with([v](Constraints& c) { c.max = v; });
  }

 private:
  template <class Change>
  Constraints with(Change change) const {
    Constraints c = *this;
    change(c);
    return c;
  }
};
inline Constraints required() { return Constraints().required(); }
inline Constraints at_least(double v) { return Constraints().at_least(v); }
inline Constraints above(double v) { return Constraints().above(v); }
inline Constraints at_most(double v) { return Constraints().at_most(v); }

// The spelling of one enumerator in config files. An enum E used as a field needs
// `std::span<const EnumName<E>> enum_names(E)` in its own namespace.
template <class E>
struct EnumName {
  E value;
  std::string_view name;
};

template <class T>
concept Enum = std::is_enum_v<T>;
template <class T>
concept UnsignedInteger = std::unsigned_integral<T> && !std::same_as<T, bool>;
template <class T>
concept Number = UnsignedInteger<T> || std::same_as<T, double>;

// The config spelling of an enum value.
template <Enum E>
std::string_view name_of(E value) {
  for (const EnumName<E>& e : enum_names(E{})) {
    if (e.value == value) return e.name;
  }
  throw InvariantError("config: an enum value has no name in enum_names()");
}

// Where a tree of values came from.
struct Source {
  std::string name;              // "run.yaml", "--set model.layers=40"
  bool has_positions = true;     // a file: messages say name:line:column; --set: only the name
  std::filesystem::path folder;  // relative paths are resolved against it; empty: the current
                                 // directory
  std::string preset{};          // a preset file: its name ("qwen3-14b"); "" for user input
};

// One YAML value, with where it was written.
struct Node {
  enum class Kind { kNull, kScalar, kList, kMapping };
  struct Entry;

  Kind kind = Kind::kNull;
  std::string text;            // kScalar
  bool quoted = false;         // kScalar written in quotes: a string, never a number or bool
  std::vector<Node> items;     // kList
  std::vector<Entry> entries;  // kMapping, in document order; keys are unique
  std::shared_ptr<const Source> source;
  int line = 0;    // 1-based
  int column = 0;  // 1-based

  std::string where() const;                     // "run.yaml:3:5", or "--set model.layers=40"
  const Node* find(std::string_view key) const;  // the value of key in a mapping, or nullptr
};

struct Node::Entry {
  Node key;  // a scalar
  Node value;
};

// Parses one YAML document. An empty document is a kNull node. Syntax errors, more than one
// document, non-scalar keys, duplicate keys, tags and unknown aliases are InputErrors.
Node parse_yaml(std::string_view text, std::shared_ptr<const Source> source);

// Parses a `--set KEY.PATH=VALUE` option (without "--set ") into {KEY: {PATH: VALUE}}; VALUE is
// YAML (a scalar, or a flow list such as [1, 2]). Errors name the option.
Node parse_set_option(std::string_view option);

// Throws the InputError for a config file that holds no value (empty, or only comments).
[[noreturn]] void throw_empty_document(const Node& root);

// A scalar naming a preset, as the shorthand `model: NAME` would (for load_preset).
Node preset_reference(std::string_view name);

// Names of the presets of a family ("models": configs/models/*.yaml, compiled into the binary),
// sorted.
std::vector<std::string> preset_names(std::string_view family);

// What KeyCollector learns about a section before it is parsed.
struct SectionInfo {
  std::vector<std::string> keys;  // valid keys, in declaration order
  std::string preset_family;      // "" if the section has no presets
  bool has_required = false;
};

// Collects a section's keys (the first pass of parse_section).
class KeyCollector {
 public:
  template <class T>
  void field(std::string_view key, T&, std::string_view, Constraints c = {}) {
    info_.keys.emplace_back(key);
    info_.has_required = info_.has_required || c.is_required;
  }
  void presets(std::string&, std::string_view family) {
    info_.keys.emplace_back("preset");
    info_.preset_family = family;
  }
  template <class Expected, class Predicate>
  void check(std::string_view, const Expected&, Predicate&&) {}
  const SectionInfo& info() const { return info_; }

 private:
  SectionInfo info_;
};

template <class T>
concept Section = std::is_class_v<T> && requires(T& t, KeyCollector& k) {
  t.visit(k);
};

// std::optional<T>: a key that may be absent.
template <class T>
struct OptionalTraits : std::false_type {};
template <class T>
struct OptionalTraits<std::optional<T>> : std::true_type {
  using value_type = T;
};
template <class T>
concept Optional = OptionalTraits<T>::value;

// "model" + "layers" → "model.layers"; "" + "seed" → "seed".
std::string join_path(std::string_view prefix, std::string_view key);

// A section's sources after presets and replacement are applied, and its unknown keys checked.
struct ResolvedSection {
  std::string path;                  // "model"; "" for the top level
  std::string where;                 // where the section was given, for messages about it
  std::vector<const Node*> sources;  // mappings, lowest priority first (the preset's first)
  std::string preset;                // the preset named, "" if none
  std::string preset_family;
  std::shared_ptr<const Node> preset_tree;  // owns the preset's nodes

  const Node* value_of(std::string_view key) const;  // from the last source that has it
  std::vector<const Node*> values_of(std::string_view key) const;  // every source's, in order
  [[noreturn]] void fail_missing(std::string_view key, std::string_view description) const;
  // Names the key's value; if a preset gave it, also the keys the user set over the preset.
  [[noreturn]] void fail_check(std::string_view key, std::string_view expected) const;
};

// Applies the layering rules to a section's sources (see the top of this file) and checks their
// keys against info. `parent_where` locates the section when no source gives it.
ResolvedSection resolve_section(const SectionInfo& info, std::vector<const Node*> sources,
                                std::string path, const std::string& parent_where);

namespace detail {

// A value being parsed: its key path and constraints, for messages.
struct FieldRef {
  std::string path;
  Constraints constraints;
};

std::uint64_t parse_unsigned(const Node& node, const FieldRef& field, std::uint64_t largest);
double parse_number(const Node& node, const FieldRef& field);
bool parse_bool(const Node& node, const FieldRef& field);
std::string parse_string(const Node& node, const FieldRef& field);
std::filesystem::path parse_path(const Node& node, const FieldRef& field);
// `path` made absolute: relative to `folder`, or to the current directory when folder is empty.
std::filesystem::path resolve_path(const std::filesystem::path& path,
                                   const std::filesystem::path& folder);
std::size_t parse_choice(const Node& node, const FieldRef& field,
                         const std::vector<std::string_view>& names);
// The node's items; an error saying `expected` when it is not a list.
const std::vector<Node>& parse_list(const Node& node, const FieldRef& field,
                                    const std::string& expected);

// What a value must be, as error messages and `spin config keys` say it: "an integer >= 1",
// or in the plural for list elements: "integers >= 1".
std::string integer_phrase(const Constraints& c, bool plural);
std::string number_phrase(const Constraints& c, bool plural);

// A value in YAML: numbers shortest round-trip, strings quoted only where YAML needs it.
std::string format_unsigned(std::uint64_t value);
std::string format_number(double value);
std::string format_string(std::string_view value);

template <class T>
struct Codec;

template <UnsignedInteger T>
struct Codec<T> {
  static T parse(const Node& n, const FieldRef& f) {
    return static_cast<T>(parse_unsigned(n, f, std::numeric_limits<T>::max()));
  }
  static std::string format(T v) { return format_unsigned(v); }
  static std::string phrase(const Constraints& c, bool plural = false) {
    return integer_phrase(c, plural);
  }
};

template <>
struct Codec<double> {
  static double parse(const Node& n, const FieldRef& f) { return parse_number(n, f); }
  static std::string format(double v) { return format_number(v); }
  static std::string phrase(const Constraints& c, bool plural = false) {
    return number_phrase(c, plural);
  }
};

template <>
struct Codec<bool> {
  static bool parse(const Node& n, const FieldRef& f) { return parse_bool(n, f); }
  static std::string format(bool v) { return v ? "true" : "false"; }
  static std::string phrase(const Constraints&) { return "true or false"; }
};

template <>
struct Codec<std::string> {
  static std::string parse(const Node& n, const FieldRef& f) { return parse_string(n, f); }
  static std::string format(const std::string& v) { return format_string(v); }
  static std::string phrase(const Constraints&) { return "a string"; }
};

template <>
struct Codec<std::filesystem::path> {
  static std::filesystem::path parse(const Node& n, const FieldRef& f) { return parse_path(n, f); }
  static std::string format(const std::filesystem::path& v) {
    return format_string(v.generic_string());
  }
  static std::string phrase(const Constraints&) { return "a path"; }
};

template <Enum E>
struct Codec<E> {
  static std::vector<std::string_view> names() {
    std::vector<std::string_view> out;
    for (const EnumName<E>& e : enum_names(E{})) out.push_back(e.name);
    return out;
  }
  static E parse(const Node& n, const FieldRef& f) {
    return enum_names(E{})[parse_choice(n, f, names())].value;
  }
  static std::string format(E v) { return std::string(name_of(v)); }
  static std::string phrase(const Constraints&) { return one_of(names()); }
};

template <Number T>
struct Codec<std::vector<T>> {
  static std::vector<T> parse(const Node& n, const FieldRef& f) {
    std::vector<T> out;
    const auto& items = parse_list(n, f, phrase(f.constraints));
    for (std::size_t i = 0; i < items.size(); ++i) {
      out.push_back(
          Codec<T>::parse(items[i], {f.path + "[" + std::to_string(i) + "]", f.constraints}));
    }
    return out;
  }
  static std::string format(const std::vector<T>& v) {
    std::string out = "[";
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i > 0) out += ", ";
      out += Codec<T>::format(v[i]);
    }
    return out + "]";
  }
  static std::string phrase(const Constraints& c) {
    return std::string("a list of ") + Codec<T>::phrase(c, true);
  }
};

}  // namespace detail

template <Section S>
void parse_section(S& section, std::vector<const Node*> sources, std::string path,
                   const std::string& parent_where);

// Reads a section's keys from resolved sources into the struct (the second pass of
// parse_section).
class Parser {
 public:
  explicit Parser(const ResolvedSection& section) : section_(section) {}

  template <class T>
  void field(std::string_view key, T& value, std::string_view description, Constraints c = {}) {
    if constexpr (Optional<T>) {
      // A null value means "none" and drops what earlier sources gave.
      std::vector<const Node*> values = section_.values_of(key);
      const auto null = std::find_if(values.rbegin(), values.rend(),
                                     [](const Node* n) { return n->kind == Node::Kind::kNull; });
      if (null != values.rend()) {
        value.reset();
        values.erase(values.begin(), null.base());
      }
      if (values.empty()) return;
      if constexpr (Section<typename T::value_type>) {
        if (!value) value.emplace();
        parse_section(*value, std::move(values), join_path(section_.path, key), section_.where);
      } else {
        value = detail::Codec<typename T::value_type>::parse(*values.back(),
                                                             {join_path(section_.path, key), c});
      }
    } else if constexpr (Section<T>) {
      parse_section(value, section_.values_of(key), join_path(section_.path, key), section_.where);
    } else {
      const Node* node = section_.value_of(key);
      if (node == nullptr) {
        if (c.is_required) section_.fail_missing(key, description);
        // A default path is relative to the current directory, like one given by --set.
        if constexpr (std::same_as<T, std::filesystem::path>) {
          value = detail::resolve_path(value, {});
        }
        return;
      }
      value = detail::Codec<T>::parse(*node, {join_path(section_.path, key), c});
    }
  }
  void presets(std::string& name, std::string_view) { name = section_.preset; }
  template <class Expected, class Predicate>
  void check(std::string_view key, const Expected& expected, Predicate&& ok) {
    if (ok()) return;
    if constexpr (std::is_invocable_v<const Expected&>) {
      section_.fail_check(key, expected());
    } else {
      section_.fail_check(key, expected);
    }
  }

 private:
  const ResolvedSection& section_;
};

// Parses one section from its sources (lowest priority first) into `section`, whose member
// initialisers give the defaults. `path` is the section's key path ("" for the top level).
template <Section S>
void parse_section(S& section, std::vector<const Node*> sources, std::string path,
                   const std::string& parent_where) {
  KeyCollector keys;
  section.visit(keys);
  const ResolvedSection resolved =
      resolve_section(keys.info(), std::move(sources), std::move(path), parent_where);
  Parser parser(resolved);
  section.visit(parser);
}

// Where the value at `key_path` ("trace.generator.geometry.page_tokens") was written last among
// `trees` (lowest priority first); where none writes it, its closest enclosing section written;
// nullptr if none is.
const Node* written_at(const std::vector<Node>& trees, std::string_view key_path);

// Runs `check`, and gives a KeyError it throws the position of its key in `trees`.
template <class Check>
void located(const std::vector<Node>& trees, Check&& check) {
  try {
    check();
  } catch (const KeyError& e) {
    const Node* node = written_at(trees, e.key_path());
    if (node == nullptr) throw;
    throw InputError(node->where() + ": " + e.what());
  }
}

// Parses a whole config: `text` from `source`, then the --set options in order; then `check`
// (rules between sections) on the result, its KeyErrors located.
template <Section S>
S parse_config(std::string_view text, std::shared_ptr<const Source> source,
               const std::vector<std::string>& sets, void (*check)(const S&) = nullptr) {
  std::vector<Node> trees;
  trees.reserve(sets.size() + 1);
  trees.push_back(parse_yaml(text, std::move(source)));
  if (trees.front().kind == Node::Kind::kNull) {
    throw_empty_document(trees.front());
  }
  for (const std::string& set : sets) trees.push_back(parse_set_option(set));
  std::vector<const Node*> sources;
  for (const Node& tree : trees) sources.push_back(&tree);
  S config;
  parse_section(config, std::move(sources), "", trees.front().where());
  if (check != nullptr) located(trees, [&] { check(config); });
  return config;
}

// The section as preset `name` of its family defines it; `path` is the section's key path, for
// messages ("model").
template <Section S>
S load_preset(std::string_view name, std::string path) {
  const Node reference = preset_reference(name);
  S section;
  parse_section(section, {&reference}, std::move(path), reference.where());
  return section;
}

// Writes a section as YAML: one `key: value` line per key, nested sections indented, each line
// commented with the key's description.
class Emitter {
 public:
  struct Line {
    int indent;
    std::string text;
    std::string comment;
  };
  explicit Emitter(std::vector<Line>& lines, int indent = 0) : lines_(lines), indent_(indent) {}

  template <class T>
  void field(std::string_view key, const T& value, std::string_view description,
             Constraints c = {}) {
    if constexpr (Optional<T>) {
      if (value) field(key, *value, description, c);  // an absent key is not written
    } else if constexpr (Section<T>) {
      const std::size_t header = lines_.size();
      lines_.push_back({indent_, std::string(key) + ":", std::string(description)});
      Emitter child(lines_, indent_ + 2);
      T copy = value;  // visit() is not const; the emitter only reads
      copy.visit(child);
      // A section whose keys are all absent is an empty mapping, not nothing.
      if (lines_.size() == header + 1) lines_[header].text += " {}";
    } else {
      lines_.push_back({indent_, std::string(key) + ": " + detail::Codec<T>::format(value),
                        std::string(description)});
    }
  }
  void presets(const std::string& name, std::string_view family);
  template <class Expected, class Predicate>
  void check(std::string_view, const Expected&, Predicate&&) {}

 private:
  std::vector<Line>& lines_;
  int indent_;
};

// Renders emitted lines with their comments aligned.
std::string render_yaml(const std::vector<Emitter::Line>& lines);

template <Section S>
std::string emit_yaml(const S& section) {
  std::vector<Emitter::Line> lines;
  Emitter emitter(lines);
  S copy = section;
  copy.visit(emitter);
  return render_yaml(lines);
}

// One row of `spin config keys`.
struct KeyRow {
  std::string path;           // "model.layers"
  std::string type;           // "an integer >= 1"
  std::string default_value;  // as YAML, or "(required)"; "" for a section
  std::string description;
};

// Lists every key of a section, depth first in declaration order, with `section`'s values as
// the defaults.
class KeyLister {
 public:
  KeyLister(std::vector<KeyRow>& rows, std::string prefix)
      : rows_(rows), prefix_(std::move(prefix)) {}

  template <class T>
  void field(std::string_view key, const T& value, std::string_view description,
             Constraints c = {}) {
    const std::string path = join_path(prefix_, key);
    if constexpr (Optional<T>) {
      // Listed with the defaults of a present value; the default of the key itself is none.
      const std::size_t row = rows_.size();
      field(key, value ? *value : typename T::value_type{}, description, c);
      rows_[row].type += " (optional)";
      rows_[row].default_value = value ? rows_[row].default_value : "(none)";
    } else if constexpr (Section<T>) {
      const std::size_t row = rows_.size();
      rows_.push_back({path, "a mapping", "", std::string(description)});
      KeyLister child(rows_, path);
      T copy = value;
      copy.visit(child);
      if (child.has_presets_) rows_[row].type = "a preset name or a mapping";
    } else {
      rows_.push_back({path, detail::Codec<T>::phrase(c),
                       c.is_required ? "(required)" : detail::Codec<T>::format(value),
                       std::string(description)});
    }
  }
  void presets(const std::string& name, std::string_view family);
  template <class Expected, class Predicate>
  void check(std::string_view, const Expected&, Predicate&&) {}

 private:
  std::vector<KeyRow>& rows_;
  std::string prefix_;
  bool has_presets_ = false;
};

template <Section S>
std::vector<KeyRow> list_keys(const S& defaults) {
  std::vector<KeyRow> rows;
  KeyLister lister(rows, "");
  S copy = defaults;
  copy.visit(lister);
  return rows;
}

}  // namespace spin::config
