"""Fails if a workspace crate depends on a workspace crate above it.

engine depends on no workspace crate; operators and connectors only on engine; queries on those
three; benches on all. Reads `cargo metadata --format-version 1 --no-deps` on stdin.
"""
import json
import sys

ALLOWED = {
    "eddy-engine": set(),
    "eddy-operators": {"eddy-engine"},
    "eddy-connectors": {"eddy-engine"},
    "eddy-queries": {"eddy-engine", "eddy-operators", "eddy-connectors"},
    "eddy-benches": {"eddy-engine", "eddy-operators", "eddy-connectors", "eddy-queries"},
}


def main():
    problems = []
    for package in json.load(sys.stdin)["packages"]:
        name = package["name"]
        deps = {d["name"] for d in package["dependencies"] if d["name"].startswith("eddy-")}
        extra = deps - ALLOWED.get(name, set())
        if extra:
            problems.append(f"{name} must not depend on {', '.join(sorted(extra))}")
    if problems:
        sys.exit("layering violated: " + "; ".join(problems))
    print("layering ok")


if __name__ == "__main__":
    main()
