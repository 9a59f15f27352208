"""The longest functions and the largest classes of a package (a script, not a test).

    .venv/bin/python benchmarks/code_sizes.py [monitor] [--top 10]

Lines are counted from the ``def``/``class`` line to the last line of its body
(docstring and comments included); methods are the functions defined directly in a class.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def sizes(root: Path) -> tuple[list[tuple[int, str]], list[tuple[int, int, str]]]:
    """(lines, where) of every function and (lines, methods, where) of every class under ``root``."""
    functions: list[tuple[int, str]] = []
    classes: list[tuple[int, int, str]] = []

    def walk(node: ast.AST, path: Path, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((child.end_lineno - child.lineno + 1, f"{path}:{child.lineno} {prefix}{child.name}"))
                walk(child, path, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                methods = sum(isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef)) for c in child.body)
                classes.append((child.end_lineno - child.lineno + 1, methods, f"{path}:{child.lineno} {prefix}{child.name}"))
                walk(child, path, f"{prefix}{child.name}.")
            else:
                walk(child, path, prefix)

    for path in sorted(root.rglob("*.py")):
        walk(ast.parse(path.read_text()), path, "")
    return sorted(functions, reverse=True), sorted(classes, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="monitor")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    functions, classes = sizes(Path(args.root))
    print(f"the {args.top} longest functions (lines):")
    for lines, where in functions[: args.top]:
        print(f"  {lines:4d}  {where}")
    print(f"the {args.top} largest classes (lines, methods):")
    for lines, methods, where in classes[: args.top]:
        print(f"  {lines:4d} {methods:3d}  {where}")
    print(f"the {args.top} classes with the most methods (lines, methods):")
    for lines, methods, where in sorted(classes, key=lambda c: -c[1])[: args.top]:
        print(f"  {lines:4d} {methods:3d}  {where}")


if __name__ == "__main__":
    main()
