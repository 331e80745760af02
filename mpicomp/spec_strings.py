"""Values in ``name:key=value,…`` spec strings (compressors, topologies)."""

from __future__ import annotations

from typing import Union


def parse_value(text: str) -> Union[int, float, str]:
    """``text`` as an int, else a float, else the text itself (``inf`` stays text)."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
