"""Where benchmark results go: ``benchmarks/results/[<kind>-]<device>-<date>.json``."""
from __future__ import annotations

import datetime
import json
import os
from typing import Optional

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write_results(data, kind: str, device_label: str, path: Optional[str] = None) -> str:
    """Write ``data`` as JSON to ``path`` or the default name for ``kind`` and ``device_label``
    (``"cpu"`` or the GPU's name; spaces become dashes); print and return the path."""
    if path is None:
        stem = "-".join(p for p in (kind, device_label.replace(" ", "-"), datetime.date.today().isoformat()) if p)
        path = os.path.join(RESULTS, stem + ".json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    print(f"wrote {path}")
    return path
