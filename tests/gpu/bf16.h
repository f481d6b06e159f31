// bf16 on the host for the gpu suite's references: conversions and the poison value that
// outputs are filled with before each run (a NaN never passes a check).
#pragma once

#include <cstdint>
#include <cstring>

namespace spin::test {

inline constexpr std::uint16_t kNaN = 0x7FC0;  // bf16 quiet NaN

inline std::uint16_t to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits += 0x7FFFu + ((bits >> 16) & 1u);  // round to nearest even (no NaN inputs here)
  return static_cast<std::uint16_t>(bits >> 16);
}

inline double from_bf16(std::uint16_t h) {
  const std::uint32_t bits = std::uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace spin::test
