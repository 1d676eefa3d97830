#!/usr/bin/env python3
"""Table (markdown) and plot (PNG, when matplotlib is there) from the JSON reports that
scripts/gpu-bench.sh collects: vela-<set>-<mode>.json and torch-<set>.json.

usage: gpu_report.py DIR   (writes DIR/table.md and DIR/latency.png)
"""
import json
import sys
from pathlib import Path

# Each mode replays recorded CUDA graphs; "-eager" launches every op from the host.
MODES = ["fp16-eager", "fp16", "q8f16-eager", "q8f16", "q4f16-eager", "q4f16"]


def main():
    d = Path(sys.argv[1])
    rows, bars = [], []
    header = ("| card | set | mode | preprocess ms | vision ms | projector ms | prefill ms | ms/token | total ms (p50 / p95) "
              "| floor ms | ratio | PyTorch eager ms | speed-up | torch.compile ms | GPU memory GiB |")
    rows.append(header)
    rows.append("|" + "---|" * (header.count("|") - 1))
    for set_ in ["small", "7b"]:
        tp = d / f"torch-{set_}.json"
        torch = json.loads(tp.read_text()) if tp.exists() else None
        t_ms = torch["eager"]["total_ms"]["p50"] if torch else None
        tc = torch.get("compiled", {}) if torch else {}
        tc_ms = tc.get("total_ms", {}).get("p50") if "total_ms" in tc else None
        for mode in MODES:
            p = d / f"vela-{set_}-{mode}.json"
            if not p.exists():
                continue
            r = json.loads(p.read_text())
            tot = r["total_ms"]["p50"]
            mem = r.get("gpu_memory") or {}
            sp = f"{t_ms / tot:.2f}×" if t_ms else "-"
            rows.append(
                f"| {r['card']} | {set_} | {mode} | {r.get('preprocess_ms', {}).get('p50', 0):.2f} | {r['vision_ms']['p50']:.2f} | {r['projector_ms']['p50']:.2f} "
                f"| {r['prefill_ms']['p50']:.2f} | {r['decode_token_ms']['p50']:.2f} | {tot:.2f} / {r['total_ms']['p95']:.2f} "
                f"| {r['floor']['total_ms']:.2f} | {r['ratio']:.2f} | {f'{t_ms:.2f}' if t_ms else '-'} | {sp} "
                f"| {f'{tc_ms:.2f}' if tc_ms else '-'} | {mem.get('peak_bytes', 0) / 2**30:.2f} |")
            bars.append((f"{set_} {mode}", r, t_ms))
        if torch:
            rows.append(f"\n{set_}: agreement with PyTorch on {len(torch['agreement'])} inputs: max projector rel. L2 "
                        f"{torch['max_projector_rel_l2']:.2e}, max first-token logits rel. L2 {torch['max_logits_rel_l2']:.2e}, "
                        f"greedy tokens equal: {sum(a['tokens_equal'] for a in torch['agreement'])}/{len(torch['agreement'])}"
                        + (f"; torch.compile: {tc['error'][:200]}" if "error" in tc else "") + "\n")
    (d / "table.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    seven = [b for b in bars if b[0].startswith("7b")] or bars
    if not seven:
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = []
    for i, (name, r, t_ms) in enumerate(seven):
        parts = [("preprocess", r.get("preprocess_ms", {}).get("p50", 0)), ("vision", r["vision_ms"]["p50"]), ("projector", r["projector_ms"]["p50"]),
                 ("prefill", r["prefill_ms"]["p50"]), ("decode (6 tokens)", 6 * r["decode_token_ms"]["p50"])]
        left = 0
        for j, (lab, v) in enumerate(parts):
            ax.barh(i, v, left=left, color=f"C{j}", label=lab if i == 0 else None)
            left += v
        ax.plot([r["floor"]["total_ms"]] * 2, [i - 0.4, i + 0.4], "k--", label="floor" if i == 0 else None)
        if t_ms:
            ax.plot([t_ms], [i], "r*", ms=12, label="PyTorch eager bf16" if i == 0 else None)
        labels.append(name)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("ms per action (p50)")
    ax.set_title(f"OpenVLA predict_action on {seven[0][1]['card']}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(d / "latency.png", dpi=110)


if __name__ == "__main__":
    main()
