"""Values in ``name:key=value,…`` spec strings (compressors, topologies)."""

from __future__ import annotations

from typing import Iterator, Union


def parse_value(text: str) -> Union[int, float, str]:
    """``text`` as an int, else a float (``inf`` too), else the text itself (``elias``)."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def spec_items(name: str, arguments: str) -> Iterator[tuple[str, str]]:
    """The ``key=value`` items of the ``arguments`` after ``name:`` in a spec, as stripped
    ``(key, value text)`` pairs in order; empty items are skipped. An item that is not of the
    form key=value raises ValueError (naming ``name`` and the item) when it is reached."""
    for item in filter(None, (a.strip() for a in arguments.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not value.strip():
            raise ValueError(f"{name}: parameter {item!r} is not of the form key=value")
        yield key.strip(), value.strip()
