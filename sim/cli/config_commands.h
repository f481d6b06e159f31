// `spin config show`, `spin config keys`, and the `models` and `hardware` list families.
//
// add_config_options() and config_from_options() are how every command that runs a config takes
// one: --config FILE, usually also an optional positional FILE (the built-in default when absent),
// plus repeatable --set KEY=VALUE overrides.
#pragma once

#include <boost/program_options.hpp>
#include <span>
#include <string>
#include <vector>

#include "common/config/config.h"
#include "sim/cli/command.h"

namespace spin::cli {

void register_config_commands(Registry& registry);

// Adds the option `config` (FILE) and `--set KEY=VALUE` to `options`, and `config` to
// `positional` at the next position when given (a command whose positional is something else,
// like replay's trace, passes null: its help then names --config only).
void add_config_options(boost::program_options::options_description& options,
                        boost::program_options::positional_options_description* positional);

// The config named by the `config` option (or the built-in default) with the overrides: those of
// the command's shorthand options given, then --set's, then `last` (a command's own, e.g. the
// trace source of --trace).
config::Config config_from_options(const boost::program_options::variables_map& vm,
                                   std::span<const Shorthand> shorthands = {},
                                   const std::vector<std::string>& last = {});

// For command `name` ("sim"), which reads the config's trace: where the config is the built-in
// default (no config file) and its sample trace is not there (spin runs outside the source tree,
// whose traces/sample.spt the default names relative to the current folder), an InputError that
// says so and how to give a trace (`fix`).
void check_built_in_trace(bool config_file, const config::Config& config, std::string_view name,
                          std::string_view fix = "give a trace (--trace FILE) or a config");

}  // namespace spin::cli
