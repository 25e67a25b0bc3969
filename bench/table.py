#!/usr/bin/env python3
"""Prints the standard-set table and the issue-9 target ratios from moe-bench JSON lines.

Usage: bench/table.py RESULTS.jsonl   (the last record of each config/precision wins)
"""
import json
import sys


def key(r):
    m = r["model"]
    if m["ffn"] == "dense":
        return ("dense", r["precision"])
    return ("moe G=%d %s" % (m["G"], m["routing"]), r["precision"])


def main(path):
    recs = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                if "ms_per_step" in r:
                    recs[key(r)] = r
    if not recs:
        sys.exit("no model results in %s" % path)
    any_r = next(iter(recs.values()))
    print("engine fp32/bf16 runs on %s, %d threads; tokens/step %d" %
          (any_r["cpu_isa"], any_r["threads"], any_r["model"]["tokens_per_step"]))
    hdr = "%-28s %-5s %9s %9s %8s %9s %9s %8s %8s %7s" % (
        "config", "prec", "ms/step", "tok/s", "GFLOP/s", "peak2048", "peakmodel", "MFU2048", "gemm%", "mem/min")
    print(hdr)
    print("-" * len(hdr))
    for (name, prec), r in sorted(recs.items()):
        ph = r["phases_ms_per_step"]
        gemm = ph.get("gemm", 0) + ph.get("grouped_gemm", 0)
        pk = r["gemm_peak_gflops"]
        p2048 = pk["bf16_2048"] if prec == "bf16" else pk["fp32_2048"]
        pmod = pk["bf16_model_shapes"] if prec == "bf16" else pk["fp32_model_shapes"]
        print("%-28s %-5s %9.1f %9.0f %8.1f %9.1f %9.1f %8.3f %8.2f %7.2f" % (
            name, prec, r["ms_per_step"], r["tokens_per_s"], r["achieved_gflops"], p2048, pmod,
            r["mfu_vs_2048"], gemm / r["ms_per_step"], r["memory"]["ratio_to_min"]))

    print("\nTargets (issue 9):")

    def show(label, value, target, ok):
        print("  %-62s %8s  target %-8s %s" % (label, "%.3f" % value if value is not None else "n/a", target,
                                               "" if value is None else ("MET" if ok(value) else "NOT MET")))

    d32 = recs.get(("dense", "fp32"))
    if d32:
        show("dense fp32: achieved GFLOP/s / same-run fp32 2048^2 GEMM", d32["fraction_of_fp32_2048"], ">= 0.5",
             lambda v: v >= 0.5)
    d16 = recs.get(("dense", "bf16"))
    if d32 and d16:
        show("dense: bf16 tokens/s / fp32 tokens/s (3x is for AMX CPUs)",
             d16["tokens_per_s"] / d32["tokens_per_s"], ">= 3", lambda v: v >= 3)
    for prec in ("fp32", "bf16"):
        for routing in ("expert_choice", "token_choice"):
            g1 = recs.get(("moe G=1 %s" % routing, prec))
            g16 = recs.get(("moe G=16 %s" % routing, prec))
            if g1 and g16:
                show("MoE E=8 %s %s: step time G=16 / G=1" % (routing, prec),
                     g16["ms_per_step"] / g1["ms_per_step"], "<= 1.3", lambda v: v <= 1.3)
    worst = max(recs.values(), key=lambda r: r["memory"]["ratio_to_min"])
    show("memory: (peak RSS - baseline) / analytic minimum, worst run", worst["memory"]["ratio_to_min"], "<= 1.5",
         lambda v: v <= 1.5)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
