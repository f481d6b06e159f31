// The `spin` program: see sim/cli/command.h and `spin --help`.
#include "sim/cli/command.h"

int main(int argc, char** argv) {
  return spin::cli::run_cli(spin::cli::Args(argv + 1, argv + argc));
}
