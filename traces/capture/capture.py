#!/usr/bin/env python3
"""Captures attention-access traces from real models: `python3 traces/capture/capture.py --help`.

The tool is the package spin_capture beside this file (docs/trace-capture.md)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from spin_capture.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
