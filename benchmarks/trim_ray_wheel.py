"""A copy of a Ray wheel without what `--executor ray` never uses, for a machine without a
package index that accepts only a small upload (a tool for moving Ray, not part of qie-bench).

Drops the Java jars, the dashboard's web client and the ML libraries (RLlib, Tune, Train, Serve,
Data, LLM, Workflow), and rewrites RECORD to match. Core, the raylet and GCS binaries, the dashboard
agent and the runtime-env agent stay. ray 2.60.0 cp312 manylinux2014_x86_64: 79.3 MB -> 39.3 MB.

Usage: python benchmarks/trim_ray_wheel.py ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl OUT_DIR
then on the other machine: pip install --no-index --no-deps OUT_DIR/ray-...whl
(its dependencies — click, filelock, jsonschema, msgpack, packaging, protobuf, pyyaml, requests —
must be there already or travel beside it.)
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

DROP = ("ray/jars/", "ray/dashboard/client/", "ray/rllib/", "ray/tune/", "ray/train/", "ray/serve/", "ray/data/",
        "ray/llm/", "ray/workflow/")


def trim(wheel: Path, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            if info.filename.startswith(DROP):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(line for line in lines if not line.startswith(DROP)) + "\n").encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    path = trim(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB (from {Path(sys.argv[1]).stat().st_size / 1e6:.1f} MB)")
