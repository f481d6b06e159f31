#include "common/policy/decision_log.h"

#include <charconv>

namespace spin::policy {
namespace {

void put(std::string& out, std::uint64_t value) {
  char buffer[24];
  const auto end = std::to_chars(buffer, buffer + sizeof(buffer), value).ptr;
  out.append(buffer, end);
}

void put_key(std::string& out, PageKey key) {
  put(out, key_stream(key));
  out += ':';
  put(out, key_page(key));
}

void put_field(std::string& out, const char* name, std::uint64_t value) {
  out += ' ';
  out += name;
  out += ' ';
  put(out, value);
}

}  // namespace

void append_decision_log(std::string& out, const PoolDecisions& d) {
  out += "step ";
  put(out, d.now);
  put_field(out, "req", d.request);
  put_field(out, "pool", d.pool);
  put_field(out, "sel", d.keys.size());
  put_field(out, "hit", d.hits);
  put_field(out, "fetch", d.fetch_index.size());
  put_field(out, "bypass", d.bypass_index.size());
  put_field(out, "evict", d.victim_slot.size());
  put_field(out, "static", d.static_pages);
  out += '\n';
  if (d.hits > 0) {
    out += 'H';
    std::size_t f = 0;  // fetch_index ascends, so hits are the resident indices it skips
    for (std::size_t i = 0; i < d.keys.size(); ++i) {
      if (f < d.fetch_index.size() && d.fetch_index[f] == i) {
        ++f;
      } else if (d.slot_of[i] >= 0) {
        out += ' ';
        put_key(out, d.keys[i]);
        out += '@';
        put(out, static_cast<std::uint64_t>(d.slot_of[i]));
      }
    }
    out += '\n';
  }
  if (!d.victim_slot.empty()) {
    out += 'E';
    for (std::size_t v = 0; v < d.victim_slot.size(); ++v) {
      out += ' ';
      put_key(out, d.victim_key[v]);
      out += '@';
      put(out, static_cast<std::uint64_t>(d.victim_slot[v]));
    }
    out += '\n';
  }
  if (!d.fetch_index.empty()) {
    out += 'F';
    for (const std::uint32_t i : d.fetch_index) {
      out += ' ';
      put_key(out, d.keys[i]);
      out += '@';
      put(out, static_cast<std::uint64_t>(d.slot_of[i]));
    }
    out += '\n';
  }
  if (!d.bypass_index.empty()) {
    out += 'B';
    for (const std::uint32_t i : d.bypass_index) {
      out += ' ';
      put_key(out, d.keys[i]);
    }
    out += '\n';
  }
}

}  // namespace spin::policy
