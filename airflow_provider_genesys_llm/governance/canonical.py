"""One canonical JSON text for values that are hashed or compared, shared by records, chain and witnesses."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal values give equal text. Non-JSON values become ``str``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
