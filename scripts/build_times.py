#!/usr/bin/env python3
"""Build-time report from Ninja's log: wall span of the last build, the sum of the
compile times, and the slowest translation units.

Usage: scripts/build_times.py [build_dir] [--top N]
For a clean-build figure: rm -rf build && RLHF_JOBS=2 CCACHE_DISABLE=1 scripts/build.sh,
then run this. Ninja appends to .ninja_log; only the newest entry per output counts, so after a
clean build the figures are those of that build.
"""
import os
import sys


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--top")]
    top = 20
    for i, a in enumerate(sys.argv[1:]):
        if a.startswith("--top="):
            top = int(a.split("=", 1)[1])
    build = args[0] if args else os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "build")
    latest = {}
    with open(os.path.join(build, ".ninja_log")) as f:
        for line in f:
            if line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 4:
                continue
            start, end, output = int(parts[0]), int(parts[1]), parts[3]
            latest[output] = (start, end)
    if not latest:
        print("no entries in .ninja_log")
        return 1
    entries = sorted(latest.items(), key=lambda kv: kv[1][0])
    span = max(e for _, (_, e) in entries) - min(s for _, (s, _) in entries)
    total = sum(e - s for _, (s, e) in entries)
    compiles = [(e - s, o) for o, (s, e) in entries if o.endswith((".o", ".gch"))]
    print(f"{len(entries)} outputs; wall span {span / 1000:.1f} s; "
          f"sum of step times {total / 1000:.1f} s "
          f"({sum(d for d, _ in compiles) / 1000:.1f} s in {len(compiles)} compiles)")
    print(f"slowest {top} translation units:")
    for d, o in sorted(compiles, reverse=True)[:top]:
        print(f"  {d / 1000:7.1f} s  {o}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
