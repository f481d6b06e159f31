// Seeded mutation fuzzing of the config parser, and replay of the inputs that once broke it
// (tests/data/fuzz/config/, see its README.md). Every input must load, or fail with an
// InputError whose message is one line of bounded length; whatever loads must give the same
// resolved config when its resolved YAML is loaded again. The suite runs under ASan and UBSan in
// CI, so memory errors in the parser or in yaml-cpp fail here too.
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "common/config/config.h"
#include "common/embedded.h"
#include "common/error.h"
#include "tests/support.h"

namespace {

// One line that still fits the longest valid-key list (the hardware section, 17 keys) after a
// mutated option echoed in full.
constexpr std::size_t kMaxMessageBytes = 600;

// Bytes that mean something to YAML, and a few that do not.
const std::string kAlphabet = "{}[]:,-#&*!|>'\"%@`?~ \n\t.0123456789abexyz_=+E\\";

std::string mutate(std::string s, std::mt19937_64& rng) {
  const auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  const int edits = 1 + static_cast<int>(pick(4));
  for (int k = 0; k < edits && !s.empty(); ++k) {
    switch (pick(6)) {
      case 0:  // flip a byte to any value
        s[pick(s.size())] = static_cast<char>(rng());
        break;
      case 1:  // insert a YAML-significant byte
        s.insert(pick(s.size() + 1), 1, kAlphabet[pick(kAlphabet.size())]);
        break;
      case 2:  // delete a run
        s.erase(pick(s.size()), 1 + pick(8));
        break;
      case 3:  // truncate
        s.resize(pick(s.size()));
        break;
      case 4:  // copy a piece elsewhere (duplicates keys, nests structures)
        s.insert(pick(s.size()), s.substr(pick(s.size()), 1 + pick(40)));
        break;
      case 5:  // a run of one bracket, quote or space (nesting, unterminated scalars)
        s.insert(pick(s.size()), 1 + pick(50), kAlphabet[pick(12)]);
        break;
    }
  }
  return s;
}

// Loads text; checks the outcome is a config that round-trips or a well-formed InputError.
void check_outcome(const std::string& text, const std::vector<std::string>& sets,
                   const std::string& label) {
  INFO(label << "\n--- input ---\n" << text << "\n--- end ---");
  try {
    const spin::config::Config config = spin::config::load_config_text(text, "fuzz.yaml", sets);
    const std::string resolved = spin::config::to_yaml(config);
    CHECK(spin::config::to_yaml(spin::config::load_config_text(resolved, "resolved.yaml")) ==
          resolved);
  } catch (const spin::InputError& e) {
    const std::string message = e.what();
    INFO("message: " << message);
    CHECK(message.find('\n') == std::string::npos);
    CHECK(message.size() <= kMaxMessageBytes);
    CHECK(!message.empty());
  } catch (const std::exception& e) {
    FAIL("not an InputError: " << e.what());
  }
}

std::vector<std::string> seed_configs() {
  return {
      std::string(*spin::embedded_file("configs/default.yaml")),
      spin::config::to_yaml(spin::config::default_config()),
      "seed: 7\nmodel: {preset: qwen3-32b, dtype: fp8}\nhardware:\n  preset: a100-80gb-pcie\n"
      "  transfer: {page_bytes: [1, 2], gather_gbps: [1.5, 2], per_page_copy_gbps: [1, 1e3]}\n"
      "trace: {path: \"x y.spt\"}\n",
      "model: &m qwen3-14b\nhardware: h100-sxm\ntrace:\n  path: *m\n",
  };
}

}  // namespace

TEST_CASE("config fuzz: mutated configs load or fail with a one-line InputError",
          "[unit][config]") {
  const auto seeds = seed_configs();
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    std::mt19937_64 rng(seed);
    for (int i = 0; i < 1000; ++i) {
      std::string text = seeds[rng() % seeds.size()];
      const int rounds = 1 + static_cast<int>(rng() % 3);
      for (int r = 0; r < rounds; ++r) text = mutate(text, rng);
      check_outcome(
          text, {},
          std::string("seed ") + std::to_string(seed) + ", mutation " + std::to_string(i));
    }
  }
}

TEST_CASE("config fuzz: mutated --set options load or fail with a one-line InputError",
          "[unit][config]") {
  const std::vector<std::string> options = {"model.layers=48", "model=qwen3-32b",
                                            "hardware.transfer.gather_gbps=[1, 2, 3, 4, 5]",
                                            "trace.path=a/b.spt", "model.dtype=fp8"};
  const std::string base = "model: qwen3-14b\nhardware: h100-sxm\n";
  std::mt19937_64 rng(11);
  for (int i = 0; i < 1000; ++i) {
    std::vector<std::string> sets = {mutate(options[rng() % options.size()], rng)};
    if (rng() % 2) sets.push_back(mutate(options[rng() % options.size()], rng));
    check_outcome(base, sets,
                  std::string("set mutation ") + std::to_string(i) + ": --set " + sets.front());
  }
}

TEST_CASE("config fuzz: the corpus of inputs that broke the parser is replayed", "[unit][config]") {
  const auto folder = spin::test::source_path("tests/data/fuzz/config");
  int replayed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    if (entry.path().extension() != ".yaml") continue;
    check_outcome(spin::test::read_file(entry.path()), {}, entry.path().filename().string());
    ++replayed;
  }
  CHECK(replayed >= 5);
}
