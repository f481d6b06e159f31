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
#include <utility>

namespace spin {

class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An InputError about the value of one config key, found after parsing (a rule between keys).
// The message is "KEY.PATH: what"; a loader that still holds the config's sources puts where
// the key was written in front (config::located).
class KeyError : public InputError {
 public:
  KeyError(std::string key_path, const std::string& what)
      : InputError(key_path + ": " + what), key_path_(std::move(key_path)) {}
  const std::string& key_path() const { return key_path_; }

 private:
  std::string key_path_;
};

// Thrown when an internal invariant fails; the message says which invariant.
class InvariantError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace spin
