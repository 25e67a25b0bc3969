#!/usr/bin/env python3
"""Proves check_layers.py fails when a layering rule is broken.

    run_fixture.py CASE WORKDIR

Copies the fixture tree (fixture/: three modules core <- backend_cpu <- model
and their map) to WORKDIR/CASE, breaks one rule as CASE says, runs the checker
on the copy and fails unless it exits as expected and, when it must fail, says
which file, include and rule. `clean` breaks nothing and must pass, so a checker
that rejects everything fails too. Python standard library only.
"""

import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def append(path, text):
    def edit(root):
        with open(os.path.join(root, path), "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return edit


def replace(path, old, new):
    def edit(root):
        p = os.path.join(root, path)
        with open(p, encoding="utf-8") as f:
            s = f.read()
        if old not in s:
            raise SystemExit(f"run_fixture: {path} of the fixture has no {old!r} to replace")
        with open(p, "w", encoding="utf-8") as f:
            f.write(s.replace(old, new))
    return edit


def write(path, text):
    def edit(root):
        p = os.path.join(root, path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return edit


# case: (edit of the fixture or None, regexes every one of which the checker's
# stderr must match; none: the checker must succeed)
CASES = {
    "clean": (None, []),
    # The rule: model/, moe/, train/ include no src/backend/cpu header.
    "backend_internal": (
        append("src/model/model.cpp", '#include "backend/cpu/gemm_internal.hpp"'),
        [r'^src/model/model\.cpp:\d+: #include "backend/cpu/gemm_internal\.hpp": '
         r"src/backend/cpu/gemm_internal\.hpp is internal to module backend_cpu"]),
    "undeclared_dependency": (
        append("src/backend/cpu/gemm.cpp", '#include "finemoe/model.hpp"'),
        [r'^src/backend/cpu/gemm\.cpp:\d+: #include "finemoe/model\.hpp": module backend_cpu may not include '
         r"a header of module model \(backend_cpu's DEPS in modules\.cmake: core\)"]),
    "unowned_header": (
        write("include/finemoe/stray.hpp", "#pragma once"),
        [r"^include/finemoe/stray\.hpp: public header owned by no module"]),
    "file_outside_modules": (
        write("src/extra/extra.cpp", '#include "finemoe/error.hpp"'),
        [r"^src/extra/extra\.cpp: file belongs to no module"]),
    "undeclared_package": (
        append("src/model/model.cpp", "#include <mpi.h>"),
        [r"^src/model/model\.cpp:\d+: #include <mpi\.h>: belongs to package mpi, which module model "
         r"does not declare"]),
    "pragma_without_openmp": (
        append("src/model/model.cpp", "#pragma omp parallel for"),
        [r"^src/model/model\.cpp:\d+: #pragma omp: needs package openmp, which module model does not declare"]),
    "unresolved_include": (
        append("src/model/model.cpp", '#include "finemoe/nope.hpp"'),
        [r'^src/model/model\.cpp:\d+: #include "finemoe/nope\.hpp": names no file of the tree']),
    "cycle": (
        replace("modules.cmake", "finemoe_module(core DIR src/core", "finemoe_module(core DIR src/core DEPS model"),
        [r"^modules\.cmake: module dependency cycle: (core -> model -> core|model -> core -> model)"]),
    "unused_dependency": (
        replace("src/model/model.cpp", '#include "finemoe/backend.hpp"\n', ""),
        [r"^modules\.cmake:\d+: module model declares DEPS backend_cpu, but none of its files includes"]),
    "missing_header": (
        replace("modules.cmake", "HEADERS error.hpp", "HEADERS error.hpp gone.hpp"),
        [r"^modules\.cmake:\d+: module core lists header gone\.hpp, but include/finemoe/gone\.hpp does not exist"]),
    "header_owned_twice": (
        replace("modules.cmake", "HEADERS model.hpp", "HEADERS model.hpp error.hpp"),
        [r"^modules\.cmake:\d+: include/finemoe/error\.hpp is owned by both core and model"]),
}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in CASES:
        print(f"usage: run_fixture.py CASE WORKDIR; CASE one of {' '.join(CASES)}", file=sys.stderr)
        return 2
    case, work = sys.argv[1], sys.argv[2]
    edit, expected = CASES[case]
    root = os.path.join(os.path.abspath(work), case)
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(os.path.join(HERE, "fixture"), root)
    if edit:
        edit(root)
    r = subprocess.run([sys.executable, os.path.join(HERE, "check_layers.py"), "--root", root,
                        "--map", os.path.join(root, "modules.cmake")],
                       capture_output=True, text=True)
    print(r.stdout, end="")
    print(r.stderr, end="")
    if not expected:
        if r.returncode != 0:
            print(f"FAIL: the checker rejected the unmodified fixture (exit {r.returncode})")
            return 1
        print(f"ok: {case}: the checker accepts the fixture")
        return 0
    if r.returncode != 1:
        print(f"FAIL: {case}: the checker exited {r.returncode}, expected 1 (a layering problem)")
        return 1
    missing = [e for e in expected if not re.search(e, r.stderr, re.M)]
    if missing:
        print(f"FAIL: {case}: the checker's messages do not match " + "; ".join(missing))
        return 1
    print(f"ok: {case}: the checker fails and names the problem")
    return 0


if __name__ == "__main__":
    sys.exit(main())
