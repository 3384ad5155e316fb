"""The typed model of a run: records, summaries, run directories and the measures they hold.

```
io.py        atomic writes, the append-only record log, JSON numbers (inf/nan as strings)
records.py   Record (one cases.jsonl line), Status, item keys
measures.py  every measured figure declared once: key, unit, direction, family, label
summary.py   build_summary (the one builder of summary.json) and its typed views
rundir.py    RunDir: a run directory read and checked once (gate, report, baseline, simulation)
```
"""

from .io import (
    RESULT_FILES,
    SCHEMA_VERSION,
    RecordLog,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    from_json_number,
    json_safe,
    load_json_file,
    read_records,
    schema_text,
)
from .measures import MEASURES, Direction, Family, Measure, Unit, measure, measures
from .records import ATTEMPTED, Record, Status, item_key, latest_by_key, validate_records
from .rundir import RunDir, read_builds, read_ended
from .summary import (
    RunSummary,
    VariantSummary,
    build_summary,
    check_summary,
    summarize_variant,
    utc_now,
    validate_summary,
)

__all__ = [
    "ATTEMPTED", "MEASURES", "RESULT_FILES", "SCHEMA_VERSION", "Direction", "Family", "Measure", "Record", "RecordLog",
    "RunDir", "RunSummary", "Status", "Unit", "VariantSummary", "atomic_write_bytes", "atomic_write_json",
    "atomic_write_text", "build_summary", "check_summary", "from_json_number", "item_key", "json_safe",
    "latest_by_key", "load_json_file", "measure", "measures", "read_builds", "read_ended", "read_records", "schema_text",
    "summarize_variant", "utc_now", "validate_records", "validate_summary",
]
