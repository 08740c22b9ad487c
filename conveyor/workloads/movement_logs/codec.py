"""JSON of the hot paths (every posted log, every queued item): orjson when installed, else the standard library.

Both write the same compact JSON (``{"a":1}``) and read the same JSON text,
except that orjson refuses ``NaN``/``Infinity`` and lone surrogates, which no
movement log may hold anyway. The ``movement_logs`` extra installs orjson; it
is three to five times faster on these small objects.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "loads"]


def _std_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


dumps: Callable[[Any], bytes] = _std_dumps
loads: Callable[[str | bytes], Any] = json.loads
try:
    import orjson

    dumps, loads = orjson.dumps, orjson.loads
except ImportError:  # pragma: no cover - without the extra
    pass
