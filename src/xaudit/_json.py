"""``json.dumps(..., default=json_default)``: numpy scalars and arrays as Python values,
anything else as its ``str``. Shared by the files the library writes and the CLI's --json
(numpy is imported on first use, so the CLI does not pay for it at start-up)."""
from __future__ import annotations


def json_default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
