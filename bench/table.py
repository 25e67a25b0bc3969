#!/usr/bin/env python3
"""Prints the standard-set table and the issue-9 target ratios from moe-bench JSON lines.

Usage: bench/table.py RESULTS.jsonl [TUNED.jsonl]   (the last record of each config/precision wins)
With TUNED.jsonl (run_standard.sh's second pass with OMP_WAIT_POLICY=passive), also
prints default/tuned tokens/s per config.
"""
import json
import sys


def key(r):
    m = r["model"]
    if m["ffn"] == "dense":
        return ("dense", r["precision"])
    return ("moe G=%d %s" % (m["G"], m["routing"]), r["precision"])


def best_ms(r):
    """Best timed step: on a shared machine the mean is inflated by other processes."""
    return r.get("ms_per_step_best", r.get("ms_per_step_min", r["ms_per_step"]))


def tps_best(r):
    return r["model"]["tokens_per_step"] / (best_ms(r) * 1e-3)


def gf_best(r):
    return r["model_flops_per_token"] * tps_best(r) * 1e-9


def load(path):
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
    return recs


def compare_tuned(recs, tuned):
    print("\nDefault environment vs tuned (OMP_WAIT_POLICY=passive), tokens/s of the best step:")
    worst = None
    for k in sorted(recs):
        if k not in tuned:
            continue
        ratio = tps_best(recs[k]) / tps_best(tuned[k])
        worst = ratio if worst is None else min(worst, ratio)
        print("  %-28s %-5s default %9.0f  tuned %9.0f  default/tuned %.3f" % (
            k[0], k[1], tps_best(recs[k]), tps_best(tuned[k]), ratio))
    if worst is not None:
        print("  worst default/tuned %.3f  target >= 0.95 %s" % (worst, "MET" if worst >= 0.95 else "NOT MET"))


def main(path, tuned_path=None):
    recs = load(path)
    any_r = next(iter(recs.values()))
    print("engine fp32/bf16 runs on %s, %d threads; tokens/step %d" %
          (any_r["cpu_isa"], any_r["threads"], any_r["model"]["tokens_per_step"]))
    hdr = "%-28s %-5s %9s %9s %9s %8s %9s %9s %8s %8s %7s" % (
        "config", "prec", "ms/step", "best ms", "tok/s*", "GFLOP/s*", "peak2048", "peakmodel", "MFU2048*", "gemm%", "mem/min")
    print(hdr)
    print("-" * len(hdr))
    print("(* from the best step; gemm% = GEMM share of the mean step; mem/min = (peak RSS - baseline) / analytic minimum)")
    def order(item):
        (name, prec), r = item
        m = r["model"]
        return (m["ffn"] != "dense", m.get("routing", ""), m.get("G", 0), prec)

    for (name, prec), r in sorted(recs.items(), key=order):
        ph = r["phases_ms_per_step"]
        gemm = ph.get("gemm", 0) + ph.get("grouped_gemm", 0)
        pk = r["gemm_peak_gflops"]
        p2048 = pk["bf16_2048"] if prec == "bf16" else pk["fp32_2048"]
        pmod = pk["bf16_model_shapes"] if prec == "bf16" else pk["fp32_model_shapes"]
        print("%-28s %-5s %9.1f %9.1f %9.0f %8.1f %9.1f %9.1f %8.3f %8.2f %7.2f" % (
            name, prec, r["ms_per_step"], best_ms(r), tps_best(r), gf_best(r), p2048, pmod,
            gf_best(r) / p2048, gemm / r["ms_per_step"], r["memory"]["ratio_to_min"]))

    print("\nTargets (issue 9; time ratios use the best step of each run):")

    def show(label, value, target, ok):
        print("  %-62s %8s  target %-8s %s" % (label, "%.3f" % value if value is not None else "n/a", target,
                                               "" if value is None else ("MET" if ok(value) else "NOT MET")))

    d32 = recs.get(("dense", "fp32"))
    if d32:
        frac = gf_best(d32) / d32["gemm_peak_gflops"]["fp32_2048"]
        print("  (best-step basis: %s)" % d32.get("best_basis", "wall time"))
        show("dense fp32: achieved GFLOP/s (best step) / same-run fp32 2048^2", frac, ">= 0.5",
             lambda v: v >= 0.5)
    d16 = recs.get(("dense", "bf16"))
    if d32 and d16:
        show("dense: bf16 tokens/s / fp32 tokens/s (3x is for AMX CPUs)",
             best_ms(d32) / best_ms(d16), ">= 3", lambda v: v >= 3)
    for prec in ("fp32", "bf16"):
        for routing in ("expert_choice", "token_choice"):
            g1 = recs.get(("moe G=1 %s" % routing, prec))
            g16 = recs.get(("moe G=16 %s" % routing, prec))
            if g1 and g16:
                show("MoE E=8 %s %s: step time G=16 / G=1" % (routing, prec),
                     best_ms(g16) / best_ms(g1), "<= 1.3", lambda v: v <= 1.3)
    worst = max(recs.values(), key=lambda r: r["memory"]["ratio_to_min"])
    show("memory: (peak RSS - baseline) / analytic minimum, worst run", worst["memory"]["ratio_to_min"], "<= 1.5",
         lambda v: v <= 1.5)
    if tuned_path:
        compare_tuned(recs, load(tuned_path))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    main(*sys.argv[1:])
