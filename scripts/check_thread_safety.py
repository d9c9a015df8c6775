#!/usr/bin/env python3
"""Clang's -Wthread-safety over every translation unit that uses Abseil's lock
annotations (ABSL_GUARDED_BY & co.), which GCC parses but never checks.

Reads <build>/compile_commands.json (the GCC build), keeps the TUs that contain an
annotation or include a header that does, and re-runs each as `clang++ -fsyntax-only`
with only the thread-safety warnings on, as errors. No objects are built, so it needs
nothing but the GCC build's generated headers. Exit status 1 names the violations.

Usage: scripts/check_thread_safety.py [build_dir] [--jobs N]
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ANNOTATION = re.compile(r"ABSL_(GUARDED_BY|PT_GUARDED_BY|EXCLUSIVE_LOCKS_REQUIRED|"
                        r"SHARED_LOCKS_REQUIRED|LOCKS_EXCLUDED|ACQUIRED_AFTER|ACQUIRED_BEFORE|"
                        r"EXCLUSIVE_LOCK_FUNCTION|UNLOCK_FUNCTION|LOCK_RETURNED)")
# GCC build flags that clang rejects or that would turn other warnings into errors.
DROP = re.compile(r"^(-Werror.*|-W(all|extra)|-Wno-.*|-Winvalid-pch|-fopenmp|-fno-gnu-unique|"
                  r"-fconcepts.*|-fmax-errors.*)$")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--jobs")]
    jobs = 2
    for a in sys.argv[1:]:
        if a.startswith("--jobs="):
            jobs = int(a.split("=", 1)[1])
    root = os.environ.get("RLHF_SOURCE_DIR") or os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))
    build = os.path.abspath(args[0] if args else os.path.join(root, "build"))
    clang = next((c for c in ("clang++-14", "clang++") if shutil.which(c)), None)
    if clang is None:
        print("[thread-safety] clang++ not installed; skipping", file=sys.stderr)
        return 0
    db_path = os.path.join(build, "compile_commands.json")
    if not os.path.exists(db_path):
        print(f"[thread-safety] {db_path} missing: configure the build first", file=sys.stderr)
        return 2
    with open(db_path) as f:
        db = json.load(f)

    def read(path):
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    annotated_headers = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and
                       os.path.join(dirpath, d) != build and d != "build"]
        for name in filenames:
            if name.endswith(".h"):
                path = os.path.join(dirpath, name)
                if ANNOTATION.search(read(path)):
                    annotated_headers.add(os.path.relpath(path, root))

    # A TU is checked when it holds annotations itself or defines the functions of an
    # annotated header (same path, .cc). Header-only annotated code (services/batcher.h)
    # is covered by the TUs that use it and are annotated themselves (its test). Every
    # includer of an annotated header would be several times the work for nothing.
    selected = []
    for entry in db:
        src = entry["file"]
        if not src.startswith(root + os.sep) or not src.endswith(".cc"):
            continue
        own_header = os.path.relpath(src, root)[:-3] + ".h"
        if ANNOTATION.search(read(src)) or own_header in annotated_headers:
            selected.append(entry)

    def command(entry):
        argv = shlex.split(entry["command"]) if "command" in entry else list(entry["arguments"])
        out = [clang]
        skip = False
        for a in argv[1:]:
            if skip:
                skip = False
                continue
            if a in ("-o", "-c"):
                skip = a == "-o"
                continue
            if a == "-include":  # GCC's precompiled header (clang cannot read a .gch)
                skip = True
                continue
            if DROP.match(a) or a == entry["file"]:
                continue
            out.append(a)
        return out + ["-fsyntax-only", "-Wno-everything", "-Wthread-safety",
                      "-Werror=thread-safety", entry["file"]]

    def run(entry):
        p = subprocess.run(command(entry), cwd=entry["directory"], capture_output=True, text=True)
        return entry["file"], p.returncode, p.stderr

    failed = 0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for path, rc, err in pool.map(run, selected):
            rel = os.path.relpath(path, root)
            if rc != 0:
                failed += 1
                print(f"[thread-safety] FAIL {rel}\n{err}", file=sys.stderr)
            else:
                print(f"[thread-safety] ok   {rel}", file=sys.stderr)
    print(f"[thread-safety] {len(selected)} annotated translation units, {failed} failing",
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
