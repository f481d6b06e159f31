#!/usr/bin/env python3
"""Prints 'PASSED FAILED': Catch2 test-case totals found in a meson test log.

Catch2 v2 closes each run with either 'All tests passed (A assertions in N test cases)' or
'test cases: N | P passed | F failed'. A test executable that crashed before its summary
counts as one failure (its meson result is not 'exit status 0' and it has no summary).
"""
import re
import sys

text = open(sys.argv[1], errors="replace").read()
passed = failed = 0
for block in re.split(r"\n(?==+ \d+/\d+ =+)", text):
    ok = re.search(r"All tests passed \(\d+ assertions? in (\d+) test cases?\)", block)
    mixed = re.search(r"test cases:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed", block)
    if ok:
        passed += int(ok.group(1))
    elif mixed:
        passed += int(mixed.group(2))
        failed += int(mixed.group(3))
    else:
        result = re.search(r"^result:\s+(.*)$", block, re.M)
        if result and result.group(1).strip() != "exit status 0":
            failed += 1
print(passed, failed)
