#!/usr/bin/env python3
"""The longest `fn`s of the Rust sources under a folder (default `daemon/`),
by line count: from the line of `fn` to the line of the body's closing
brace, found by counting braces outside comments, strings and character
literals. Declarations without a body (trait methods ending in `;`) are
skipped; a nested `fn` counts on its own and inside its parent.

    tools/longest_fns.py [--top 10] [folder ...]
"""

import argparse
import re
import sys
from pathlib import Path

FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")


def code_mask(text: str) -> list[bool]:
    """True for each character that is code (not in a comment, string or char literal)."""
    mask = [True] * len(text)
    i, n = 0, len(text)

    def blank(a: int, b: int) -> None:
        for k in range(a, min(b, n)):
            mask[k] = False

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(text, i)) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
            blank(i, j)
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(i, j + 1)
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{7f}', '{') or a lifetime ('a).
            m = re.compile(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'").match(text, i)
            if m:
                blank(i, m.end())
                i = m.end()
            else:
                i += 1
        else:
            i += 1
    return mask


def functions(path: Path):
    text = path.read_text(encoding="utf-8")
    mask = code_mask(text)
    line_starts = [0]
    for k, ch in enumerate(text):
        if ch == "\n":
            line_starts.append(k + 1)

    def line_of(pos: int) -> int:
        lo, hi = 0, len(line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if line_starts[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    for m in FN.finditer(text):
        if not mask[m.start()]:
            continue
        # The body's opening brace, or a `;` first (no body). Parentheses,
        # brackets and angle brackets of the signature hold no `{` except in
        # a `where` clause's bounds, which have none in this code base.
        j, depth_paren = m.end(), 0
        opened = None
        while j < len(text):
            if mask[j]:
                ch = text[j]
                if ch in "([":
                    depth_paren += 1
                elif ch in ")]":
                    depth_paren -= 1
                elif ch == ";" and depth_paren == 0:
                    break
                elif ch == "{" and depth_paren == 0:
                    opened = j
                    break
            j += 1
        if opened is None:
            continue
        depth, j = 0, opened
        while j < len(text):
            if mask[j]:
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
            j += 1
        start, end = line_of(m.start()), line_of(j)
        yield end - start + 1, m.group(1), start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("folders", nargs="*", type=Path, default=[Path("daemon")])
    a = ap.parse_args()
    found = []
    for folder in a.folders:
        for path in [folder] if folder.is_file() else sorted(folder.rglob("*.rs")):
            for lines, name, start in functions(path):
                found.append((lines, f"{path}:{start}", name))
    found.sort(key=lambda f: (-f[0], f[1]))
    for lines, where, name in found[: a.top]:
        print(f"{lines:5d}  {name:32s} {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
