#!/usr/bin/env python3
"""Prints 'PASSED FAILED': test-case totals found in a meson test log.

Catch2 v2 closes each run with either 'All tests passed (A assertions in N test cases)' or
'test cases: N | P passed | F failed'. Python unittest (the capture tool's test) closes with
'Ran N tests in ...s' and then 'OK' (maybe '(skipped=S)') or 'FAILED (failures=F, errors=E,
skipped=S)': passed = N - F - E - S, failed = F + E. A test executable that crashed before its
summary counts as one failure (its meson result is not 'exit status 0' and it has no summary).
"""
import re
import sys

text = open(sys.argv[1], errors="replace").read()
passed = failed = 0
for block in re.split(r"\n(?==+ \d+/\d+ =+)", text):
    ok = re.search(r"All tests passed \(\d+ assertions? in (\d+) test cases?\)", block)
    mixed = re.search(r"test cases:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed", block)
    ran = re.search(r"^Ran (\d+) tests? in [\d.]+s\s*\n\s*\n?(OK|FAILED)(?: \(([^)]*)\))?\s*$",
                    block, re.M)
    result = re.search(r"^result:\s+(.*)$", block, re.M)
    exit_ok = result is None or result.group(1).strip() == "exit status 0"
    if ok:
        passed += int(ok.group(1))
    elif mixed:
        passed += int(mixed.group(2))
        failed += int(mixed.group(3))
    elif ran:
        counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", ran.group(3) or ""))
        bad = counts.get("failures", 0) + counts.get("errors", 0)
        good = int(ran.group(1)) - bad - counts.get("skipped", 0)
        if ran.group(2) == "OK" and not exit_ok:
            bad += 1  # the tests passed but the program failed afterwards
        passed += max(good, 0)
        failed += bad
    elif not exit_ok:
        failed += 1
print(passed, failed)
