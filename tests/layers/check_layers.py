#!/usr/bin/env python3
"""Checks the module layering of a finemoe source tree against its module map.

    check_layers.py [--root DIR] [--map FILE] [--graph]

The map (default ROOT/cmake/modules.cmake; its header comment has the format)
says which module owns each file and header and which modules and packages each
module may use. Every #include and `#pragma` line of ROOT/src, ROOT/include and
ROOT/analysis is checked:

  - a header under a module's directory (src/<module>/*.hpp) is private: only
    files of that module may include it;
  - a public header (include/finemoe/*.hpp) may be included by the module that
    owns it and by modules that list the owner in DEPS;
  - an #include <...> or #pragma of an external package needs the package in
    the module's USES;
  - a quoted #include must name a file of the tree.

and so is the map itself: every file belongs to a module, every public header
is owned by exactly one module and exists, DEPS has no cycle, and every DEPS and
USES entry is used by some file of its module.

Each problem is one line "FILE[:LINE]: message" on stderr; the exit code is 1
if there is any, else 0. Python standard library only.
"""

import argparse
import fnmatch
import os
import re
import sys

SOURCE_EXTS = (".cpp", ".hpp", ".h", ".cc", ".cu", ".cuh")
SCANNED_TOPS = ("src", "include", "analysis")
PUBLIC_DIR = "include/finemoe"

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^">]+)[">]')
PRAGMA_RE = re.compile(r"^\s*#\s*pragma\s+(\w+)")


class MapError(Exception):
    pass


def parse_map(path):
    """Reads the restricted CMake of the module map: finemoe_package() and
    finemoe_module() calls whose arguments are plain words."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # Strip comments (whole text is plain words; '#' starts a comment).
    code = "\n".join(line.split("#", 1)[0] for line in text.split("\n"))
    packages, modules = {}, {}
    pos = 0
    call_re = re.compile(r"\s*(\w+)\s*\(([^()]*)\)", re.S)
    while True:
        rest = code[pos:]
        if not rest.strip():
            break
        m = call_re.match(code, pos)
        if not m:
            line = code[: pos + len(rest) - len(rest.lstrip())].count("\n") + 1
            raise MapError(f"{path}:{line}: expected finemoe_package(...) or finemoe_module(...) "
                           f"near: {rest.strip()[:60]!r}")
        pos = m.end()
        name, args = m.group(1), m.group(2).split()
        line = code[: m.start(1)].count("\n") + 1
        for a in args:
            if any(c in a for c in "\"'$;\\"):
                raise MapError(f"{path}:{line}: argument {a!r} is not a plain word")
        if not args:
            raise MapError(f"{path}:{line}: {name}() without a name")
        if name == "finemoe_package":
            spec = split_keywords(path, line, args[1:], lists=("INCLUDES", "PRAGMAS"), options=())
            packages[args[0]] = {"includes": spec["INCLUDES"], "pragmas": spec["PRAGMAS"], "line": line}
        elif name == "finemoe_module":
            spec = split_keywords(path, line, args[1:], lists=("DIR", "DEPS", "USES", "HEADERS"),
                                  options=("OPTIONAL",))
            if len(spec["DIR"]) != 1:
                raise MapError(f"{path}:{line}: module {args[0]} needs exactly one DIR")
            if args[0] in modules:
                raise MapError(f"{path}:{line}: module {args[0]} defined twice")
            modules[args[0]] = {"dir": spec["DIR"][0].rstrip("/"), "optional": spec["OPTIONAL"],
                                "deps": spec["DEPS"], "uses": spec["USES"], "headers": spec["HEADERS"],
                                "line": line}
        else:
            raise MapError(f"{path}:{line}: unknown command {name}()")
    return packages, modules


def split_keywords(path, line, args, lists, options):
    spec = {k: [] for k in lists}
    spec.update({k: False for k in options})
    current = None
    for a in args:
        if a in options:
            spec[a] = True
            current = None
        elif a in lists:
            current = a
        elif current is None:
            raise MapError(f"{path}:{line}: {a!r} follows no keyword ({', '.join(lists + options)})")
        else:
            spec[current].append(a)
    return spec


def find_cycle(modules):
    state = {}

    def visit(m, stack):
        state[m] = "active"
        stack.append(m)
        for d in modules[m]["deps"]:
            if d not in modules:
                continue
            if state.get(d) == "active":
                return stack[stack.index(d):] + [d]
            if d not in state:
                c = visit(d, stack)
                if c:
                    return c
        stack.pop()
        state[m] = "done"
        return None

    for m in modules:
        if m not in state:
            c = visit(m, [])
            if c:
                return c
    return None


def strip_block_comments(text):
    # Keep the line count, so line numbers stay right.
    return re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)


def check(root, map_path):
    problems = []

    def problem(where, msg):
        problems.append(f"{where}: {msg}")

    rel_map = os.path.relpath(map_path, root)
    packages, modules = parse_map(map_path)

    # -- the map on its own --------------------------------------------------
    for m, spec in modules.items():
        for d in spec["deps"]:
            if d not in modules:
                problem(f"{rel_map}:{spec['line']}", f"module {m}: DEPS names unknown module {d}")
            elif d == m:
                problem(f"{rel_map}:{spec['line']}", f"module {m}: depends on itself")
        for p in spec["uses"]:
            if p not in packages:
                problem(f"{rel_map}:{spec['line']}", f"module {m}: USES names unknown package {p}")
        if not spec["optional"] and not os.path.isdir(os.path.join(root, spec["dir"])):
            problem(f"{rel_map}:{spec['line']}", f"module {m}: DIR {spec['dir']} does not exist "
                    "(mark the module OPTIONAL if it is planned)")
    cycle = find_cycle(modules)
    if cycle:
        problem(rel_map, "module dependency cycle: " + " -> ".join(cycle))

    public_owner = {}
    for m, spec in modules.items():
        for h in spec["headers"]:
            rel = f"{PUBLIC_DIR}/{h}"
            if rel in public_owner:
                problem(f"{rel_map}:{spec['line']}", f"{rel} is owned by both {public_owner[rel]} and {m}")
                continue
            public_owner[rel] = m
            if not os.path.isfile(os.path.join(root, rel)):
                problem(f"{rel_map}:{spec['line']}", f"module {m} lists header {h}, but {rel} does not exist")

    # -- which module each file belongs to -------------------------------------
    dirs = sorted(((spec["dir"], m) for m, spec in modules.items()), key=lambda x: -len(x[0]))

    def owner(rel):
        if rel.startswith(PUBLIC_DIR + "/") and "/" not in rel[len(PUBLIC_DIR) + 1:]:
            return public_owner.get(rel)
        for d, m in dirs:
            if rel.startswith(d + "/"):
                return m
        return None

    files = []
    for top in SCANNED_TOPS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames.sort()
            for fn in sorted(filenames):
                if fn.endswith(SOURCE_EXTS):
                    files.append(os.path.relpath(os.path.join(dirpath, fn), root))
    file_set = set(files)

    # -- every #include and #pragma ------------------------------------------
    used_deps = {m: set() for m in modules}
    used_pkgs = {m: set() for m in modules}
    for rel in files:
        mod = owner(rel)
        if mod is None:
            if rel.startswith(PUBLIC_DIR + "/") and "/" not in rel[len(PUBLIC_DIR) + 1:]:
                problem(rel, f"public header owned by no module (list {os.path.basename(rel)} under "
                        f"HEADERS of the module that implements it in {rel_map})")
            else:
                problem(rel, f"file belongs to no module (no module's DIR in {rel_map} contains it)")
            continue
        spec = modules[mod]
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            lines = strip_block_comments(f.read()).split("\n")
        for lineno, line in enumerate(lines, 1):
            where = f"{rel}:{lineno}"
            pm = PRAGMA_RE.match(line)
            if pm:
                for p, pspec in packages.items():
                    if pm.group(1) in pspec["pragmas"]:
                        used_pkgs[mod].add(p)
                        if p not in spec["uses"]:
                            problem(where, f"#pragma {pm.group(1)}: needs package {p}, which module {mod} "
                                    f"does not declare (its USES in {rel_map}: {' '.join(spec['uses']) or 'none'}; "
                                    "without it the compiler ignores the pragma)")
                continue
            im = INCLUDE_RE.match(line)
            if not im:
                continue
            kind, name = im.group(1), im.group(2)
            shown = f'#include {kind}{name}{">" if kind == "<" else chr(34)}'
            # Resolve to a file of the tree: quoted from the file's directory,
            # then (quoted or angled) from include/ and src/.
            cands = [os.path.normpath(os.path.join(os.path.dirname(rel), name))] if kind == '"' else []
            cands += [os.path.normpath(os.path.join(d, name)) for d in ("include", "src")]
            target = next((c for c in cands if c in file_set), None)
            if target is None:
                pkg = next((p for p, pspec in packages.items()
                            if any(fnmatch.fnmatchcase(name, pat) for pat in pspec["includes"])), None)
                if pkg is not None:
                    used_pkgs[mod].add(pkg)
                    if pkg not in spec["uses"]:
                        problem(where, f"{shown}: belongs to package {pkg}, which module {mod} does not "
                                f"declare (its USES in {rel_map}: {' '.join(spec['uses']) or 'none'})")
                elif kind == '"':
                    problem(where, f"{shown}: names no file of the tree (looked in {', '.join(cands)})")
                continue  # a system or standard header
            tmod = owner(target)
            if tmod is None:
                continue  # reported as an unowned file
            if tmod == mod:
                continue
            if not target.startswith(PUBLIC_DIR + "/"):
                problem(where, f"{shown}: {target} is internal to module {tmod}: headers under "
                        f"{modules[tmod]['dir']}/ are private to it; other modules include only its "
                        f"public headers ({PUBLIC_DIR}/)")
                continue
            used_deps[mod].add(tmod)
            if tmod not in spec["deps"]:
                problem(where, f"{shown}: module {mod} may not include a header of module {tmod} "
                        f"({mod}'s DEPS in {rel_map}: {' '.join(spec['deps']) or 'none'})")

    # -- declared but unused: the map must be the real graph -------------------
    for m, spec in modules.items():
        has_files = any(owner(f) == m for f in files)
        if not has_files:
            if not spec["optional"]:
                problem(f"{rel_map}:{spec['line']}", f"module {m} has no source files in {spec['dir']}")
            continue
        for d in spec["deps"]:
            if d in modules and d not in used_deps[m]:
                problem(f"{rel_map}:{spec['line']}", f"module {m} declares DEPS {d}, but none of its files "
                        f"includes a public header of {d} (remove it, so the map stays the real graph)")
        for p in spec["uses"]:
            if p in packages and p not in used_pkgs[m]:
                problem(f"{rel_map}:{spec['line']}", f"module {m} declares USES {p}, but none of its files "
                        f"includes a header of {p} or uses its pragmas (remove it)")
    return problems, modules


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--root", default=os.path.normpath(os.path.join(here, "..", "..")),
                    help="source tree (default: this repository)")
    ap.add_argument("--map", help="module map (default: ROOT/cmake/modules.cmake)")
    ap.add_argument("--graph", action="store_true", help="also print the module graph")
    a = ap.parse_args()
    root = os.path.abspath(a.root)
    map_path = os.path.abspath(a.map or os.path.join(root, "cmake", "modules.cmake"))
    try:
        problems, modules = check(root, map_path)
    except (MapError, OSError) as e:
        print(f"check_layers: {e}", file=sys.stderr)
        return 1
    if a.graph:
        for m, spec in modules.items():
            print(f"{m}: DEPS {' '.join(spec['deps']) or '-'}; USES {' '.join(spec['uses']) or '-'}")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"check_layers: {len(problems)} layering problem(s) in {root} (map: {map_path})", file=sys.stderr)
        return 1
    print(f"check_layers: layering OK ({len(modules)} modules, map {map_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
