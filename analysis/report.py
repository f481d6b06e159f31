#!/usr/bin/env python3
"""One self-contained HTML page with the figures and summary tables of a sweep
(docs/analysis.md).

    python3 analysis/report.py INPUT... [--out FILE.html] [options]     (--help for the list)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    from spinplot.report import main  # noqa: E402
except ImportError as e:  # pandas or matplotlib missing from this Python
    print(f"report.py: error: {e}; it needs pandas and matplotlib (Debian: python3-pandas, "
          "python3-matplotlib; scripts/bootstrap.sh installs them), e.g. /usr/bin/python3",
          file=sys.stderr)
    sys.exit(2)

if __name__ == "__main__":
    sys.exit(main())
