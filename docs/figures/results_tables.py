"""Print the markdown tables of docs/results.md from a study's report.json.

    python docs/figures/results_tables.py runs/default/report.json
"""

from __future__ import annotations

import json
import sys


def mean(v: float | dict | None) -> float:
    """A metric value as report.json holds it: a plain mean or {mean, ci_low, ci_high, std}."""
    return v["mean"] if isinstance(v, dict) else v


def main(path: str) -> None:
    r = json.load(open(path, encoding="utf-8"))
    sites = sorted(r["sites"]) if isinstance(r["sites"], list) else sorted(r["sites"])
    print("| method | " + " | ".join(sites) + " | pooled |")
    print("| --- |" + " --- |" * (len(sites) + 1))
    for m, v in r["methods"].items():
        cells = [f"{mean(v['per_site'][s]['psnr']):.2f} / {mean(v['per_site'][s]['ssim']):.4f}" if s in v["per_site"] else "–"
                 for s in sites]
        p = v["pooled"]
        print(f"| {m} | " + " | ".join(cells) + f" | {mean(p['psnr']):.2f} [{p['psnr']['ci_low']:.2f}, {p['psnr']['ci_high']:.2f}] / "
              f"{mean(p['ssim']):.4f} (n = {p['n']}) |")
    verdicts = r.get("patient_comparisons") or []
    if verdicts:
        print("\n| a | b | metric | patients | mean diff | 90 % CI | bootstrap 95 % CI | mixed model [95 % CI] "
              "| p t (Holm) | p TOST (Holm) | verdict |")
        print("| --- | --- | --- | ---: | ---: | --- | --- | --- | ---: | ---: | --- |")

        def f(x: float | None, fmt: str = "+.3f") -> str:
            return "–" if x is None else format(x, fmt)

        for c in verdicts:
            mx = c.get("mixed") or {}
            mixed = f"{f(mx.get('estimate'))} [{f(mx.get('ci_low'))}, {f(mx.get('ci_high'))}]" if mx else "–"
            print(f"| {c['a']} | {c['b']} | {c['metric']} | {c['n_patients']} | {f(c['mean_diff'])} | "
                  f"[{f(c['ci90_low'])}, {f(c['ci90_high'])}] | [{f(c['ci95_low'])}, {f(c['ci95_high'])}] | {mixed} | "
                  f"{f(c['p_ttest_holm'], '.2g')} | {f(c['p_tost_holm'], '.2g')} | {c['verdict']} (±{c['margin']}) |")
    print("\n| a | b | metric | mean diff (a − b) [95% CI] | p t-test | p Wilcoxon | p TOST | margin | equivalent |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in r["comparisons"]:
        if c.get("site", "pooled") != "pooled":
            continue
        eq = "yes" if c["p_tost"] < 0.05 else "no"
        print(f"| {c['a']} | {c['b']} | {c['metric']} | {c['mean_diff']:+.4f} [{c['ci_low']:+.4f}, "
              f"{c['ci_high']:+.4f}] | {c['p_ttest']:.2g} | {c['p_wilcoxon']:.2g} | {c['p_tost']:.2g} | "
              f"±{c['margin']} | {eq} |")
    print("\n| site | threshold RMSE / NCC | min NN distance of published RMSE / NCC | published | rejected |")
    print("| --- | --- | --- | --- | --- |")
    for s, p in sorted(r["privacy"].items()):
        t, d = p["threshold"], p["min_nn_distance"]
        print(f"| {s} | {t['pixel_rmse']:.4f} / {t['ncc_robust']:.4f} | {d['pixel_rmse']:.4f} / {d['ncc_robust']:.4f} "
              f"| {p['n_published']} | {p['n_rejected']} |")
    print("\n| method | bytes sent | bytes received | total |")
    print("| --- | --- | --- | --- |")
    for m, b in r["communication_bytes"].items():
        print(f"| {m} | {b['sent']:,} | {b['received']:,} | {b['total']:,} |")
    if r.get("training"):
        print("\n| model | kept epoch | epochs run | optimiser steps | samples seen | best validation PSNR | seconds |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, t in r["training"].items():
            print(f"| {name} | {t['best_epoch']} | {t['epochs']} | {t['steps']:,} | {t['samples']:,} | "
                  f"{t['best_val_psnr']:.2f} | {t['seconds']:.1f} |")
        print("\n| method | test PSNR per seed | test SSIM per seed |")
        print("| --- | --- | --- |")
        for m, v in r["methods"].items():
            ps = v.get("per_seed") or {}
            if ps:
                print(f"| {m} | {', '.join(f'{x:.2f}' for x in ps['psnr'])} | "
                      f"{', '.join(f'{x:.4f}' for x in ps['ssim'])} |")
    for method, tu in (r.get("tuning") or {}).items():
        print(f"\n{method} tuning ({tu['rule']}); chosen: {tu['chosen']}\n")
        print("| setting | best validation PSNR | best validation MSE | kept epoch / run | seconds |")
        print("| --- | ---: | ---: | --- | ---: |")
        for t in tu["tried"]:
            print(f"| {t['params']} | {t['best_val_psnr']:.2f} | {t['best_val_mse']:.3e} | "
                  f"{t['best_epoch']} / {t['epochs']} | {t['seconds']:.1f} |")
    if r.get("machine"):
        m = r["machine"]
        print(f"\nmachine: {m['conv_gflops']} GFLOP/s conv probe, {m['cpu']}, {m['cores']} cores, torch {m['torch']}")
    print("\n| phase | seconds |")
    print("| --- | --- |")
    for k, v in r["wall_seconds"].items():
        print(f"| {k} | {v:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1])
