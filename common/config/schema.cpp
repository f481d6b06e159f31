#include "common/config/schema.h"

#include <fmt/format.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>

#include "common/embedded.h"
#include "common/text.h"

namespace spin::config {
namespace {

// Aliases can make a small file expand exponentially ("billion laughs"); no config needs more.
constexpr std::size_t kMaxNodes = 100000;

std::string where_in(const Source& source, int line, int column) {
  if (!source.has_positions || line <= 0) return source.name;
  return fmt::format("{}:{}:{}", source.name, line, column);
}

std::string where(const Source& source, const YAML::Exception& e) {
  return e.mark.is_null() ? source.name : where_in(source, e.mark.line + 1, e.mark.column + 1);
}

// Text from the input as a message shows it: control characters escaped, at most `limit` bytes
// (cut at a UTF-8 character boundary).
std::string printable(std::string_view text, std::size_t limit = 40) {
  std::string out;
  std::size_t end = std::min(text.size(), limit);
  while (end < text.size() && end > 0 && (static_cast<unsigned char>(text[end]) & 0xc0) == 0x80) {
    --end;
  }
  for (const char c : text.substr(0, end)) {
    if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  return end < text.size() ? out + "..." : out;
}

// A value as an error message shows it: 'text', the string "text", a list, ...
std::string got(const Node& node) {
  switch (node.kind) {
    case Node::Kind::kNull:
      return "nothing";
    case Node::Kind::kList:
      return "a list";
    case Node::Kind::kMapping:
      return "a mapping";
    case Node::Kind::kScalar:
      break;
  }
  return node.quoted ? fmt::format("the string \"{}\"", printable(node.text))
                     : fmt::format("'{}'", printable(node.text));
}

// Builds a Node tree from yaml-cpp's parse events, which (unlike YAML::Node) report every
// duplicate key, the position of every key and value, tags and aliases. The first error in the
// tree is kept until the parser has read the whole document, so that a YAML syntax error further
// on, the likelier cause, is the one reported.
class TreeBuilder : public YAML::EventHandler {
 public:
  explicit TreeBuilder(std::shared_ptr<const Source> source) : source_(std::move(source)) {}

  bool failed() const { return error_.has_value(); }

  // The document's value (kNull if it has none); throws the first error found in it.
  Node take_root() {
    if (error_) throw *error_;
    if (!root_) return make(Node::Kind::kNull, 1, 1);
    return std::move(*root_);
  }

  void OnDocumentStart(const YAML::Mark& mark) override {
    guarded([&] {
      if (documents_++ > 0) {
        fail(mark, "a second YAML document starts here; a config file holds one document");
      }
    });
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    guarded([&] { add(make(Node::Kind::kNull, mark), anchor, count(mark, 1)); });
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    guarded([&] {
      const auto it = anchors_.find(anchor);
      if (it == anchors_.end()) {
        fail(mark, "this alias refers to an anchor whose value is not complete here");
      }
      add(Node(it->second.first), 0, count(mark, it->second.second));
    });
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    guarded([&] {
      check_tag(mark, tag);
      Node node = make(Node::Kind::kScalar, mark);
      node.text = value;
      node.quoted = tag == "!";
      add(std::move(node), anchor, count(mark, 1));
    });
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    guarded([&] { push(Node::Kind::kList, mark, tag, anchor); });
  }
  void OnSequenceEnd() override {
    guarded([&] { pop(); });
  }
  void OnMapStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    guarded([&] { push(Node::Kind::kMapping, mark, tag, anchor); });
  }
  void OnMapEnd() override {
    guarded([&] { pop(); });
  }

 private:
  struct Frame {
    Node node;
    YAML::anchor_t anchor;
    std::size_t first;        // nodes_ before this container started
    std::string path;         // key path of this container, for messages
    std::optional<Node> key;  // a mapping's key waiting for its value
  };

  Node make(Node::Kind kind, int line, int column) const {
    Node node;
    node.kind = kind;
    node.source = source_;
    node.line = line;
    node.column = column;
    return node;
  }
  Node make(Node::Kind kind, const YAML::Mark& mark) const {
    return mark.is_null() ? make(kind, 0, 0) : make(kind, mark.line + 1, mark.column + 1);
  }
  [[noreturn]] void fail(const YAML::Mark& mark, std::string_view message) const {
    throw InputError(fmt::format("{}: {}", make(Node::Kind::kNull, mark).where(), message));
  }
  [[noreturn]] void fail(const Node& at, std::string_view message) const {
    throw InputError(fmt::format("{}: {}", at.where(), message));
  }

  // Counts n more nodes; returns n.
  std::size_t count(const YAML::Mark& mark, std::size_t n) {
    nodes_ += n;
    if (nodes_ > kMaxNodes) {
      fail(mark,
           fmt::format("the document holds more than {} values (aliases expanding?)", kMaxNodes));
    }
    return n;
  }

  void check_tag(const YAML::Mark& mark, const std::string& tag) const {
    // "?": plain, "!": quoted or a container without a tag.
    if (tag != "?" && tag != "!" && !tag.empty()) {
      fail(mark,
           fmt::format("YAML tags are not supported (found '{}'); write the value alone", tag));
    }
  }

  // The key path of a value that starts now.
  std::string child_path(const YAML::Mark& mark) const {
    if (frames_.empty()) return "";
    const Frame& top = frames_.back();
    if (top.node.kind == Node::Kind::kList) {
      return fmt::format("{}[{}]", top.path, top.node.items.size());
    }
    if (!top.key) fail(mark, "a mapping key must be a plain name, not a list or a mapping");
    return join_path(top.path, top.key->text);
  }

  void push(Node::Kind kind, const YAML::Mark& mark, const std::string& tag,
            YAML::anchor_t anchor) {
    check_tag(mark, tag);
    std::string path = child_path(mark);
    const std::size_t first = nodes_;
    count(mark, 1);
    frames_.push_back(Frame{make(kind, mark), anchor, first, std::move(path), std::nullopt});
  }

  void pop() {
    Frame frame = std::move(frames_.back());
    frames_.pop_back();
    add(std::move(frame.node), frame.anchor, nodes_ - frame.first);
  }

  // A complete value (of `size` nodes) goes to its parent.
  void add(Node node, YAML::anchor_t anchor, std::size_t size) {
    if (anchor != 0) anchors_.insert_or_assign(anchor, std::make_pair(node, size));
    if (frames_.empty()) {
      root_ = std::move(node);
      return;
    }
    Frame& top = frames_.back();
    if (top.node.kind == Node::Kind::kList) {
      top.node.items.push_back(std::move(node));
      return;
    }
    if (!top.key) {
      if (node.kind != Node::Kind::kScalar) {
        fail(node, "a mapping key must be a plain name, not empty, a list or a mapping");
      }
      for (const Node::Entry& e : top.node.entries) {
        if (e.key.text == node.text) {
          fail(node, fmt::format("duplicate key '{}' (first given at {})",
                                 printable(join_path(top.path, node.text)), e.key.where()));
        }
      }
      top.key = std::move(node);
      return;
    }
    if (node.kind == Node::Kind::kNull) {
      // yaml-cpp places an empty value at the next token, often on the next line; the key's
      // position is the one a reader wants.
      node.line = top.key->line;
      node.column = top.key->column;
    }
    top.node.entries.push_back(Node::Entry{std::move(*top.key), std::move(node)});
    top.key.reset();
  }

  // Runs one event's work unless an error was found; keeps the error. Once an error is kept the
  // tree is abandoned, so later events (of a document that may be huge) cost nothing.
  template <class Work>
  void guarded(Work work) {
    if (error_) return;
    try {
      work();
    } catch (const InputError& e) {
      error_ = e;
    }
  }

  std::shared_ptr<const Source> source_;
  std::optional<InputError> error_;
  std::optional<Node> root_;
  std::vector<Frame> frames_;
  std::map<YAML::anchor_t, std::pair<Node, std::size_t>> anchors_;  // value, its node count
  std::size_t nodes_ = 0;
  int documents_ = 0;
};

std::string subject(std::string_view path) {
  return path.empty() ? std::string() : fmt::format("{}: ", path);
}

std::string section_phrase(const SectionInfo& info, std::string_view path) {
  if (path.empty()) return "a mapping of config keys";
  if (info.preset_family.empty()) return "a mapping of keys";
  return fmt::format("a preset name (spin --list {}) or a mapping of keys", info.preset_family);
}

void check_keys(const Node& mapping, const SectionInfo& info, std::string_view path) {
  for (const Node::Entry& entry : mapping.entries) {
    const std::string& key = entry.key.text;
    if (std::find(info.keys.begin(), info.keys.end(), key) != info.keys.end()) continue;
    std::string hint;
    if (const auto match = closest_match(key, info.keys)) {
      hint = fmt::format("did you mean '{}'?", join_path(path, *match));
    } else {
      hint = fmt::format("valid keys {}are: {}", path.empty() ? "" : fmt::format("in {} ", path),
                         fmt::join(info.keys, ", "));
    }
    throw InputError(fmt::format("{}: unknown key '{}'; {}", entry.key.where(),
                                 printable(join_path(path, key)), hint));
  }
}

std::shared_ptr<const Node> load_preset_tree(const Node& named_by, const std::string& name,
                                             const SectionInfo& info, std::string_view path) {
  const std::string file = fmt::format("configs/{}/{}.yaml", info.preset_family, name);
  const auto text = embedded_file(file);
  if (!text) {
    const auto names = preset_names(info.preset_family);
    const auto match = closest_match(name, names);
    throw InputError(fmt::format("{}: {}unknown preset '{}'; {} (spin --list {})", named_by.where(),
                                 subject(path), printable(name),
                                 match ? fmt::format("did you mean '{}'?", *match)
                                       : fmt::format("known presets: {}", fmt::join(names, ", ")),
                                 info.preset_family));
  }
  auto tree = std::make_shared<const Node>(
      parse_yaml(*text, std::make_shared<const Source>(Source{file, true, {}, name})));
  if (tree->kind != Node::Kind::kMapping) {
    throw InputError(
        fmt::format("{}: expected a mapping of {} keys, got {}", tree->where(), path, got(*tree)));
  }
  if (const Node* nested = tree->find("preset")) {
    throw InputError(fmt::format("{}: a preset cannot name another preset", nested->where()));
  }
  check_keys(*tree, info, path);
  return tree;
}

[[noreturn]] void fail_value(const Node& node, const detail::FieldRef& field,
                             std::string_view message) {
  throw InputError(fmt::format("{}: {}: {}", node.where(), field.path, message));
}

[[noreturn]] void fail_type(const Node& node, const detail::FieldRef& field,
                            const std::string& expected) {
  fail_value(node, field, fmt::format("expected {}, got {}", expected, got(node)));
}

void check_bounds(double value, const Node& node, const detail::FieldRef& field,
                  const std::string& expected) {
  const Constraints& c = field.constraints;
  if ((c.min && value < *c.min) || (c.greater_than && value <= *c.greater_than) ||
      (c.max && value > *c.max)) {
    fail_value(node, field,
               fmt::format("{} is out of range; expected {}", printable(node.text), expected));
  }
}

std::string bounds_phrase(const Constraints& c, bool non_negative) {
  std::vector<std::string> parts;
  if (c.min) {
    parts.push_back(fmt::format(">= {}", *c.min));
  } else if (c.greater_than) {
    parts.push_back(fmt::format("> {}", *c.greater_than));
  } else if (non_negative) {
    parts.push_back(">= 0");
  }
  if (c.max) parts.push_back(fmt::format("<= {}", *c.max));
  return parts.empty() ? std::string() : fmt::format(" {}", fmt::join(parts, " and "));
}

bool is_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A decimal number as YAML writes one: [+-] digits [. digits] [e [+-] digits], or .5 / 5.
bool is_decimal_number(std::string_view s) {
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) s.remove_prefix(1);
  const std::size_t e = s.find_first_of("eE");
  std::string_view mantissa = s.substr(0, e);
  if (e != std::string_view::npos) {
    std::string_view exponent = s.substr(e + 1);
    if (!exponent.empty() && (exponent[0] == '+' || exponent[0] == '-')) exponent.remove_prefix(1);
    if (!is_digits(exponent)) return false;
  }
  const std::size_t dot = mantissa.find('.');
  if (dot == std::string_view::npos) return is_digits(mantissa);
  const std::string_view whole = mantissa.substr(0, dot), fraction = mantissa.substr(dot + 1);
  return (whole.empty() || is_digits(whole)) && (fraction.empty() || is_digits(fraction)) &&
         !(whole.empty() && fraction.empty());
}

bool is_reserved_word(std::string_view s) {
  std::string lower;
  for (const char c : s) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* word : {"true", "false", "yes", "no", "on", "off", "y", "n", "null"}) {
    if (lower == word) return true;
  }
  return false;
}

// yaml-cpp reports a tab in an indentation as something else at times ("illegal map value"):
// name the first line up to the error's that indents with one.
std::string tab_hint(std::string_view text, int error_line) {
  int line = 0;
  for (std::size_t at = 0; at < text.size() && line <= error_line; ++line) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    const std::string_view row = text.substr(at, end - at);
    const std::size_t indent = std::min(row.find_first_not_of(" \t"), row.size());
    if (row.substr(0, indent).find('\t') != std::string_view::npos)
      return fmt::format(" (line {} indents with a tab; YAML indents with spaces only)", line + 1);
    at = end + 1;
  }
  return {};
}

}  // namespace

std::string Node::where() const { return where_in(*source, line, column); }

const Node* Node::find(std::string_view key) const {
  for (const Entry& e : entries) {
    if (e.key.text == key) return &e.value;
  }
  return nullptr;
}

const Node* written_at(const std::vector<Node>& trees, std::string_view key_path) {
  // The key itself where any tree writes it, else its closest enclosing section that is written.
  std::string_view path = key_path;
  for (;;) {
    for (auto tree = trees.rbegin(); tree != trees.rend(); ++tree) {
      const Node* node = &*tree;
      std::string_view rest = path;
      while (node != nullptr && !rest.empty()) {
        const std::size_t dot = rest.find('.');
        node = node->find(rest.substr(0, dot));
        rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
      }
      if (node != nullptr) return node;
    }
    const std::size_t dot = path.rfind('.');
    if (dot == std::string_view::npos) return nullptr;
    path = path.substr(0, dot);
  }
}

std::string join_path(std::string_view prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : fmt::format("{}.{}", prefix, key);
}

Node parse_yaml(std::string_view text, std::shared_ptr<const Source> source) {
  std::istringstream in{std::string(text)};
  TreeBuilder builder(source);
  try {
    YAML::Parser parser(in);
    // Stop at the first error: on some inputs (tests/data/fuzz/config/endless_documents.yaml)
    // yaml-cpp 0.7 reports an empty document again and again without reading further.
    while (parser.HandleNextDocument(builder) && !builder.failed()) {
    }
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp's own message for this one is "bad file".
    throw InputError(fmt::format("{}: invalid YAML: values nested too deeply", where(*source, e)));
  } catch (const YAML::Exception& e) {
    throw InputError(fmt::format("{}: invalid YAML: {}{}", where(*source, e), printable(e.msg, 200),
                                 tab_hint(text, e.mark.line)));
  }
  return builder.take_root();
}

Node parse_set_option(std::string_view option) {
  auto source = std::make_shared<const Source>(
      Source{fmt::format("--set {}", printable(option, 200)), /*has_positions=*/false, {}});
  const std::size_t eq = option.find('=');
  if (eq == std::string_view::npos) {
    throw InputError(
        fmt::format("{}: expected KEY=VALUE, e.g. --set model.layers=40", source->name));
  }
  const std::string_view path = option.substr(0, eq);
  std::vector<std::string> keys;
  for (std::size_t start = 0;;) {
    const std::size_t dot = std::min(path.find('.', start), path.size());
    keys.emplace_back(path.substr(start, dot - start));
    const bool name =
        !keys.back().empty() && std::all_of(keys.back().begin(), keys.back().end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
        });
    if (!name) {
      throw InputError(fmt::format(
          "{}: '{}' is not a key path; expected names joined by dots, e.g. model.layers",
          source->name, printable(path)));
    }
    if (dot == path.size()) break;
    start = dot + 1;
  }
  Node tree = parse_yaml(option.substr(eq + 1), source);
  for (auto key = keys.rbegin(); key != keys.rend(); ++key) {
    Node mapping;
    mapping.kind = Node::Kind::kMapping;
    mapping.source = source;
    Node key_node = mapping;
    key_node.kind = Node::Kind::kScalar;
    key_node.text = *key;
    mapping.entries.push_back(Node::Entry{std::move(key_node), std::move(tree)});
    tree = std::move(mapping);
  }
  return tree;
}

void throw_empty_document(const Node& root) {
  throw InputError(fmt::format(
      "{}: the config is empty; expected a mapping of config keys (spin config keys lists them, "
      "spin config show prints a complete config)",
      root.source->name));
}

Node preset_reference(std::string_view name) {
  Node node;
  node.kind = Node::Kind::kScalar;
  node.text = name;
  node.source = std::make_shared<const Source>(
      Source{fmt::format("preset '{}'", printable(name)), /*has_positions=*/false, {}});
  return node;
}

std::vector<std::string> preset_names(std::string_view family) {
  const std::string prefix = fmt::format("configs/{}/", family);
  constexpr std::string_view kSuffix = ".yaml";
  std::vector<std::string> names;
  for (const EmbeddedFile& f : embedded_files()) {
    if (!f.name.starts_with(prefix) || !f.name.ends_with(kSuffix)) continue;
    const std::string_view name =
        f.name.substr(prefix.size(), f.name.size() - prefix.size() - kSuffix.size());
    if (name.find('/') == std::string_view::npos) names.emplace_back(name);
  }
  return names;
}

ResolvedSection resolve_section(const SectionInfo& info, std::vector<const Node*> sources,
                                std::string path, const std::string& parent_where) {
  ResolvedSection r;
  r.path = std::move(path);
  r.preset_family = info.preset_family;
  // A value that is not a mapping replaces what earlier sources gave for this section.
  const auto last_plain = std::find_if(sources.rbegin(), sources.rend(), [](const Node* n) {
    return n->kind != Node::Kind::kMapping;
  });
  if (last_plain != sources.rend()) sources.erase(sources.begin(), std::prev(last_plain.base()));
  const Node* shorthand = nullptr;
  if (!sources.empty() && sources.front()->kind != Node::Kind::kMapping) {
    const Node& n = *sources.front();
    if (n.kind != Node::Kind::kScalar || info.preset_family.empty()) {
      throw InputError(fmt::format("{}: {}expected {}, got {}", n.where(), subject(r.path),
                                   section_phrase(info, r.path), got(n)));
    }
    shorthand = &n;
    sources.erase(sources.begin());
  }
  r.where = shorthand         ? shorthand->where()
            : sources.empty() ? parent_where
                              : sources.front()->where();
  if (shorthand == nullptr && sources.empty()) {
    if (info.has_required) {
      throw InputError(fmt::format("{}: missing key '{}'; expected {}", parent_where, r.path,
                                   section_phrase(info, r.path)));
    }
    return r;
  }
  for (const Node* source : sources) check_keys(*source, info, r.path);

  const Node* preset = shorthand;
  for (const Node* source : sources) {
    if (const Node* named = source->find("preset")) preset = named;
  }
  if (preset != nullptr) {
    if (preset->kind != Node::Kind::kScalar) {
      throw InputError(fmt::format("{}: {}: expected a preset name (spin --list {}), got {}",
                                   preset->where(), join_path(r.path, "preset"), info.preset_family,
                                   got(*preset)));
    }
    r.preset = preset->text;
  }
  if (!r.preset.empty()) {
    r.preset_tree = load_preset_tree(*preset, r.preset, info, r.path);
    sources.insert(sources.begin(), r.preset_tree.get());
  }
  r.sources = std::move(sources);
  return r;
}

const Node* ResolvedSection::value_of(std::string_view key) const {
  for (auto it = sources.rbegin(); it != sources.rend(); ++it) {
    if (const Node* value = (*it)->find(key)) return value;
  }
  return nullptr;
}

std::vector<const Node*> ResolvedSection::values_of(std::string_view key) const {
  std::vector<const Node*> values;
  for (const Node* source : sources) {
    if (const Node* value = source->find(key)) values.push_back(value);
  }
  return values;
}

void ResolvedSection::fail_missing(std::string_view key, std::string_view description) const {
  throw InputError(fmt::format(
      "{}: missing key '{}': {}{}", where, join_path(path, key), description,
      preset_family.empty()
          ? ""
          : fmt::format("; give it, or name a preset (spin --list {})", preset_family)));
}

void ResolvedSection::fail_check(std::string_view key, std::string_view expected) const {
  const Node* value = value_of(key);
  const std::string key_path = join_path(path, key);
  // A preset's value that breaks a rule does so against values the user set over the preset:
  // name those, in the user's file or --set options, where they can be changed.
  std::vector<std::string> overrides;
  if (value != nullptr && !value->source->preset.empty()) {
    for (const Node* source : sources) {
      if (!source->source->preset.empty()) continue;
      for (const Node::Entry& e : source->entries) {
        if (e.key.text == "preset" || value_of(e.key.text) != &e.value) continue;
        overrides.push_back(
            e.value.source->has_positions
                ? fmt::format("{} at {}", join_path(path, e.key.text), e.value.where())
                : e.value.where());
      }
    }
  }
  throw InputError(fmt::format(
      "{}: {}: expected {}{}", value ? value->where() : where, key_path, expected,
      overrides.empty() ? ""
                        : fmt::format("; {} comes from preset '{}', set over it: {}", key_path,
                                      value->source->preset, fmt::join(overrides, ", "))));
}

namespace detail {

std::uint64_t parse_unsigned(const Node& node, const FieldRef& field, std::uint64_t largest) {
  const std::string expected = integer_phrase(field.constraints, false);
  std::string_view digits = node.text;
  const bool negative = !digits.empty() && digits[0] == '-';
  if (!digits.empty() && (digits[0] == '+' || digits[0] == '-')) digits.remove_prefix(1);
  if (node.kind != Node::Kind::kScalar || node.quoted || !is_digits(digits)) {
    fail_type(node, field, expected);
  }
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec == std::errc::result_out_of_range || value > largest) {
    fail_value(node, field,
               fmt::format("{} is out of range; expected {} (at most {})", printable(node.text),
                           expected, largest));
  }
  if (negative && value != 0) {
    fail_value(node, field,
               fmt::format("{} is out of range; expected {}", printable(node.text), expected));
  }
  check_bounds(static_cast<double>(value), node, field, expected);
  return value;
}

double parse_number(const Node& node, const FieldRef& field) {
  const std::string expected = number_phrase(field.constraints, false);
  if (node.kind != Node::Kind::kScalar || node.quoted || !is_decimal_number(node.text)) {
    fail_type(node, field, expected);
  }
  std::string_view text = node.text;
  if (text[0] == '+') text.remove_prefix(1);
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || !std::isfinite(value)) {
    // A double's range: overflow past ~1.8e308, or underflow below ~2.2e-308 (1e-400).
    const bool tiny = ec == std::errc::result_out_of_range &&
                      std::abs(std::strtod(std::string(text).c_str(), nullptr)) < 1;
    fail_value(
        node, field,
        fmt::format("{} is {}; expected {}", printable(node.text),
                    tiny ? "too close to 0 for a double (write 0)" : "out of range", expected));
  }
  check_bounds(value, node, field, expected);
  return value;
}

bool parse_bool(const Node& node, const FieldRef& field) {
  if (node.kind == Node::Kind::kScalar && !node.quoted) {
    for (const char* word : {"true", "True", "TRUE"}) {
      if (node.text == word) return true;
    }
    for (const char* word : {"false", "False", "FALSE"}) {
      if (node.text == word) return false;
    }
  }
  fail_type(node, field, "true or false");
}

std::string parse_string(const Node& node, const FieldRef& field) {
  if (node.kind != Node::Kind::kScalar) fail_type(node, field, "a string");
  return node.text;
}

std::filesystem::path resolve_path(const std::filesystem::path& path,
                                   const std::filesystem::path& folder) {
  if (path.is_absolute()) return path.lexically_normal();
  return (folder.empty() ? std::filesystem::absolute(path) : folder / path).lexically_normal();
}

std::filesystem::path parse_path(const Node& node, const FieldRef& field) {
  if (node.kind != Node::Kind::kScalar || node.text.empty()) fail_type(node, field, "a path");
  return resolve_path(node.text, node.source->folder);
}

std::size_t parse_choice(const Node& node, const FieldRef& field,
                         const std::vector<std::string_view>& names) {
  if (node.kind != Node::Kind::kScalar) fail_type(node, field, one_of(names));
  const auto it = std::find(names.begin(), names.end(), node.text);
  if (it != names.end()) return static_cast<std::size_t>(it - names.begin());
  if (const auto match = closest_match(node.text, names)) {
    fail_value(node, field,
               fmt::format("unknown value '{}'; did you mean '{}'? (expected {})",
                           printable(node.text), *match, one_of(names)));
  }
  fail_type(node, field, one_of(names));
}

const std::vector<Node>& parse_list(const Node& node, const FieldRef& field,
                                    const std::string& expected) {
  if (node.kind != Node::Kind::kList) fail_type(node, field, expected);
  return node.items;
}

std::string integer_phrase(const Constraints& c, bool plural) {
  return fmt::format("{}{}", plural ? "integers" : "an integer", bounds_phrase(c, true));
}

std::string number_phrase(const Constraints& c, bool plural) {
  return fmt::format("{}{}", plural ? "numbers" : "a number", bounds_phrase(c, false));
}

std::string format_unsigned(std::uint64_t value) { return fmt::format("{}", value); }

std::string format_number(double value) {
  // Shortest text that reads back as the same double; "3.0" rather than "3", so that a number
  // key does not look like an integer one.
  std::string text = fmt::format("{}", value);
  if (text.find_first_of(".en") == std::string::npos) text += ".0";
  return text;
}

std::string format_string(std::string_view value) {
  const auto plain_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '/' ||
           c == '-' || c == '+';
  };
  const bool plain =
      !value.empty() &&
      (std::isalpha(static_cast<unsigned char>(value[0])) || value[0] == '_' || value[0] == '/') &&
      std::all_of(value.begin(), value.end(), plain_char) && !is_reserved_word(value);
  if (plain) return std::string(value);
  std::string out = "\"";
  for (const char c : value) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

}  // namespace detail

namespace {

// The preset key's description, in `spin config keys` and in resolved configs.
std::string preset_description(std::string_view family) {
  return fmt::format(
      "preset this section starts from (spin --list {}); keys given next to it override its "
      "values; \"\" = none",
      family);
}

}  // namespace

void Emitter::presets(const std::string& name, std::string_view family) {
  lines_.push_back({indent_, fmt::format("preset: {}", detail::format_string(name)),
                    preset_description(family)});
}

std::string render_yaml(const std::vector<Emitter::Line>& lines) {
  // Comments start in one column, except after lines too long to wait for it.
  constexpr std::size_t kMaxColumn = 48;
  std::size_t column = 0;
  for (const Emitter::Line& line : lines) {
    const std::size_t width = static_cast<std::size_t>(line.indent) + line.text.size();
    if (width <= kMaxColumn) column = std::max(column, width);
  }
  std::string out;
  for (const Emitter::Line& line : lines) {
    std::string text = std::string(static_cast<std::size_t>(line.indent), ' ') + line.text;
    if (!line.comment.empty()) {
      text.resize(std::max(text.size(), column), ' ');
      text += "  # " + line.comment;
    }
    out += text + "\n";
  }
  return out;
}

void KeyLister::presets(const std::string& name, std::string_view family) {
  has_presets_ = true;
  rows_.push_back({join_path(prefix_, "preset"),
                   fmt::format("a preset name (spin --list {})", family),
                   detail::format_string(name), preset_description(family)});
}

}  // namespace spin::config
