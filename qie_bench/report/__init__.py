"""Reports: `qie-bench report` (one self-contained HTML page over one or more runs) and
`qie-bench signoff` (the pre-release page with one verdict, taken from the gate).

- `data`: run directories -> `ReportData` (columns per run x variant, floors, projections).
- `floors`, `gpus`: physical floors (FLOPs, bytes) and the table of known GPUs.
- `tables`, `plots`, `gallery`: what the page shows; `html`, `markdown`: how it is rendered.
- `signoff`: the gate's verdict -> SIGNED OFF / BLOCKED, and the artefacts' sha256.
"""
