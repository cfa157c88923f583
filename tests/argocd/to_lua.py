"""Turns the Argo CD health tests of contrib/argocd (health_test.yaml + testdata/*.yaml, in
Argo CD's own resource_customizations layout) into a Lua file of cases for harness.lua.

Objects become Lua tables the way Argo CD hands them to health scripts: JSON arrays are
1-based sequences, and null values are left out."""
import sys
from pathlib import Path

import yaml


def lua(value):
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else "\\%d" % ord(c) for c in value) + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join("[%s] = %s" % (lua(str(k)), lua(v)) for k, v in value.items() if v is not None) + "}"
    if hasattr(value, "isoformat"):  # YAML timestamps: Kubernetes serializes them as strings
        return lua(value.isoformat().replace("+00:00", "Z"))
    raise TypeError(type(value))


def main(root):
    cases = []
    for test_file in sorted(Path(root).glob("*/*/health_test.yaml")):
        kind_dir = test_file.parent
        for test in yaml.safe_load(test_file.read_text())["tests"]:
            obj = yaml.safe_load((kind_dir / test["inputPath"]).read_text())
            cases.append(
                "{script = %s, input = %s, want = %s, obj = %s}"
                % (
                    lua(str(kind_dir / "health.lua")),
                    lua(str(kind_dir / test["inputPath"])),
                    lua(test["healthStatus"]),
                    lua(obj),
                )
            )
    print("return {\n  " + ",\n  ".join(cases) + "\n}")


if __name__ == "__main__":
    main(sys.argv[1])
