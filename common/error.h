// Errors the project reports.
//
// InputError: something the user gave us is wrong (a file, a config key, a command-line value).
// The message names where (file, line:column, YAML key path or byte offset) and what was expected;
// the CLI prints it as `spin: error: <message>` and exits with status 2.
// Anything else thrown is a bug in spin (an internal invariant broke); the CLI reports it as an
// internal error with status 70.
#pragma once

#include <stdexcept>
#include <string>

namespace spin {

class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thrown when an internal invariant fails; the message says which invariant.
class InvariantError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace spin
