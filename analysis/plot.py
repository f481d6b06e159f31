#!/usr/bin/env python3
"""Figures of a serving study from spin's sweep and run folders (docs/analysis.md).

    python3 analysis/plot.py FIGURE INPUT... [--out DIR] [options]     (--help for the list)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    from spinplot.cli import main  # noqa: E402
except ImportError as e:  # pandas or matplotlib missing from this Python
    print(f"plot.py: error: {e}; it needs pandas and matplotlib (Debian: python3-pandas, "
          "python3-matplotlib; scripts/bootstrap.sh installs them), e.g. /usr/bin/python3",
          file=sys.stderr)
    sys.exit(2)

if __name__ == "__main__":
    sys.exit(main())
