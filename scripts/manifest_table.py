"""Print checkpoints/manifest.json as a Markdown table (for docs/grid-and-studies.md and issue notes); with
`--against OLD`, a table of what changed from another manifest (a file, or `REV:checkpoints/manifest.json` read
from git): compression, PSNR and style retained, old and new, per model.

    python scripts/manifest_table.py [MANIFEST] [--against OLD]
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
COLUMNS = {"id": "{}", "bits": "{}", "macs_removed": "{:.0%}", "params": "{:,.0f}", "compression_size": "{:.1f}x",
           "compression_macs": "{:.1f}x", "latency_ms": "{:.0f}", "runtime": "{}", "latency_ms_torch": "{:.0f}",
           "psnr": "{:.2f}", "ssim": "{:.3f}", "style_retained": "{:.2f}"}
CHANGES = {"compression_size": "{:.1f}x", "psnr": "{:.2f}", "style_retained": "{:.3f}"}
ORDER = {"teacher": 0, "identity": 1, "gs": 2, "stacked": 3, "stacked-scratch": 4, "distill": 5, "prune": 6,
         "quant": 7}


def _cell(value, fmt: str) -> str:
    return "–" if value is None or (isinstance(value, float) and pd.isna(value)) else fmt.format(value)


def markdown(table: pd.DataFrame, columns: dict[str, str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c], fmt) for c, fmt in columns.items()) + " |" for _, row in table.iterrows()]
    return "\n".join(lines)


def read_manifest(source: str) -> pd.DataFrame:
    """A manifest file, or `REV:PATH` read from git."""
    if Path(source).is_file():
        text = Path(source).read_text()
    else:
        text = subprocess.run(["git", "show", source], cwd=REPO, capture_output=True, text=True, check=True).stdout
    table = pd.DataFrame(json.loads(text))
    return table.assign(_m=table["method"].map(ORDER)).sort_values(["_m", "sparsity_target", "id"])


def changes(new: pd.DataFrame, old: pd.DataFrame) -> str:
    both = new.merge(old, on="id", how="left", suffixes=("", "_old"))
    columns = {"id": "{}"}
    for name, fmt in CHANGES.items():
        columns |= {f"{name}_old": fmt, name: fmt}
    both["psnr_change"] = both["psnr"] - both["psnr_old"]
    return markdown(both, columns | {"psnr_change": "{:+.2f}"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", nargs="?", default=str(REPO / "checkpoints" / "manifest.json"))
    parser.add_argument("--against", help="another manifest, or REV:checkpoints/manifest.json")
    args = parser.parse_args()
    table = read_manifest(args.manifest)
    print(changes(table, read_manifest(args.against)) if args.against else markdown(table, COLUMNS))
