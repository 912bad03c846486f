"""Print checkpoints/manifest.json as a Markdown table (for docs/grid-and-studies.md and issue notes).

    python scripts/manifest_table.py [MANIFEST]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

COLUMNS = {"id": "{}", "bits": "{}", "macs_removed": "{:.0%}", "params": "{:,.0f}", "compression_size": "{:.1f}x",
           "compression_macs": "{:.1f}x", "latency_ms": "{:.0f}", "runtime": "{}", "latency_ms_torch": "{:.0f}",
           "psnr": "{:.2f}", "ssim": "{:.3f}", "style_retained": "{:.2f}"}


def markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for _, row in table.iterrows():
        cells = ["–" if row[c] is None or (isinstance(row[c], float) and pd.isna(row[c])) else fmt.format(row[c])
                 for c, fmt in COLUMNS.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "checkpoints" / "manifest.json"
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    table = pd.DataFrame(json.loads(path.read_text()))
    order = {"teacher": 0, "identity": 1, "gs": 2, "stacked": 3, "stacked-scratch": 4, "distill": 5, "prune": 6,
             "quant": 7}
    table = table.assign(_m=table["method"].map(order)).sort_values(["_m", "sparsity_target", "id"])
    print(markdown(table))
