#!/usr/bin/env python3
"""Lists Rust functions longer than a limit (default 80 lines) under the given folders, and
exits non-zero when there are any. A function is counted from its `fn` line to the line
holding its closing brace at the same indentation; tests (`mod tests`) are not counted.

    hack/function-lengths.py [--limit N] src/controller
"""
import re
import sys
from pathlib import Path

FN = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)")


def long_functions(path, limit):
    lines = path.read_text().splitlines()
    out = []
    in_tests = None
    for i, line in enumerate(lines):
        if in_tests is None and re.match(r"^(\s*)mod tests\b", line):
            in_tests = len(line) - len(line.lstrip())
            continue
        if in_tests is not None:
            continue  # `mod tests` is last in every file of this repository
        m = FN.match(line)
        if not m or line.rstrip().endswith(";"):
            continue
        indent = m.group(1)
        for j in range(i, len(lines)):
            if lines[j] == indent + "}":
                length = j - i + 1
                if length > limit:
                    out.append((path, i + 1, m.group(7), length))
                break
    return out


def main(argv):
    limit = 80
    if argv[:1] == ["--limit"]:
        limit = int(argv[1])
        argv = argv[2:]
    found = []
    for root in argv or ["src/controller"]:
        for path in sorted(Path(root).rglob("*.rs")):
            found += long_functions(path, limit)
    for path, line, name, length in found:
        print(f"{path}:{line}: fn {name} is {length} lines (limit {limit})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
