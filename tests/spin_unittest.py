"""What the Python test suites share: finding the spin binary, then running unittest.

A suite runs as `python3 tests/NAME/test_NAME.py --spin PATH [unittest arguments]`; tests/meson.build
passes the binary it built. Without --spin: $SPIN_BINARY, else build/spin at the top of the tree.
"""
import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_spin():
    return os.environ.get("SPIN_BINARY", os.path.join(ROOT, "build", "spin"))


def main(suite, module):
    """Runs `module`'s tests with module.SPIN set; returns the exit status (0: all passed)."""
    argv = list(sys.argv)
    spin = default_spin()
    if "--spin" in argv:
        i = argv.index("--spin")
        spin = argv[i + 1]
        del argv[i:i + 2]
    if not os.access(spin, os.X_OK):
        print(f"{suite} tests: FAILED: no spin binary at {spin} (pass --spin PATH)",
              file=sys.stderr)
        return 1
    module.SPIN = os.path.abspath(spin)
    program = unittest.main(module=module, argv=argv, exit=False, verbosity=2)
    return 0 if program.result.wasSuccessful() else 1
