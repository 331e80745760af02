"""The one grammar of spec strings (compressors, graphs, network profiles, data sets).

Grammar::

    spec  := name [":" args]
           | name "," item ("," item)*       where the name's `Form` has a ``head`` (left out)
    args  := [word ","] item ("," item)*     where the name's `Form` has a ``head``
           | text                            where the name's `Form` has a ``rest``
    item  := key "=" value

Items are separated by commas; blanks around names, keys and values are ignored, and so are
empty items (``"qsgd:s=4,"``). Values are read by `parse_value` (int, float, else text). A
``head`` is a bare first word (``synthetic:least_squares,n=100``: the kind); a ``rest`` takes
all the text after the ``:`` verbatim, commas and colons included (``libsvm:PATH``,
``edges:PATH``). Either may also be written as a ``key=value`` item (``edges:path=g.txt``).
Compressors join two specs with ``+`` (``topk:k=8+natural``; `mpicomp.compress.registry`).

`parse_spec` checks a spec against the names a grammar knows and raises one style of
ValueError: an unknown name lists the valid names, an unknown key lists the valid keys and the
closest one, a malformed item is quoted.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def parse_value(text: str) -> int | float | str:
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
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"{name}: expected key=value, got {item!r}")
        yield key.strip(), value.strip()


@dataclass(frozen=True)
class Form:
    """What one name of a grammar accepts after its ``:``.

    Parameters
    ----------
    keys : sequence of str
        The keys of its ``key=value`` items.
    required : sequence of str
        Keys a spec must give (among ``keys``, ``head`` or ``rest``).
    head : str, optional
        A bare first item (no ``=``) is the value of this key, as text (``synthetic:KIND``).
    head_choices : sequence of str
        The valid values of ``head`` (any when empty).
    rest : str, optional
        All the text after ``:`` is the value of this key, as text (``libsvm:PATH``); the spec
        then has no other items.
    """

    keys: Sequence[str] = ()
    required: Sequence[str] = ()
    head: str | None = None
    head_choices: Sequence[str] = ()
    rest: str | None = None

    def valid_keys(self) -> list[str]:
        """Every key a ``key=value`` item may name: ``head``, ``rest``, then ``keys``."""
        return [k for k in (self.head, self.rest) if k is not None] + list(self.keys)


def closest(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the choice closest to ``word``, else ``""``."""
    near = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _with_hint(message: str, hint: str) -> str:
    return f"{message}; {hint}" if hint else message


def unknown_name(what: str, name: str, names: Iterable[str], hint: str = "") -> ValueError:
    """The error for a name the grammar does not know, listing the valid ``names`` in order."""
    names = list(names)
    return ValueError(_with_hint(f"unknown {what} {name!r}: choose one of {', '.join(names)}"
                                 f"{closest(name, names)}", hint))


def check_keys(what: str, name: str, given: Iterable[str], valid: Sequence[str], *,
               noun: str = "parameter", hint: str = "") -> None:
    """Raise the grammar's ValueError for the first key of ``given`` not in ``valid``.

    The message names the key, lists ``valid`` (``none`` when empty) and the closest valid key,
    e.g. ``"topology torus: unknown parameter 'row'; valid parameters: rows, cols (did you
    mean 'rows'?)"``.
    """
    for key in given:
        if key not in valid:
            choices = ", ".join(valid) if valid else "none"
            raise ValueError(_with_hint(f"{what} {name}: unknown {noun} {key!r}; valid {noun}s: "
                                        f"{choices}{closest(key, valid)}", hint))


@dataclass(frozen=True)
class _Spec:
    """A spec split at its name, with what `parse_spec` needs to read its items and word its
    errors.

    Attributes
    ----------
    text : str
        The whole spec, stripped (quoted in messages).
    name : str
    form : Form
    sep : str
        ``":"``, ``","`` (a name whose ``head`` is left out) or ``""`` (no arguments).
    args : str
        The text after ``sep``, stripped.
    what, noun, hint : str
        As `parse_spec` got them.
    """

    text: str
    name: str
    form: Form
    sep: str
    args: str
    what: str
    noun: str
    hint: str

    def error(self, message: str) -> ValueError:
        """ValueError with ``message`` and the hint."""
        return ValueError(_with_hint(message, self.hint))


def _split_name(spec: str, forms: Mapping[str, Form | Sequence[str]], what: str, noun: str,
                hint: str) -> _Spec:
    """``spec`` split at its name, which must be one of ``forms`` (see `parse_spec`)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(_with_hint(f"{what} spec must be a non-empty string, got {spec!r}",
                                    hint))
    text = spec.strip()
    name, sep, args = text.partition(":")
    head, comma, items = name.partition(",")
    if comma and head.strip() in forms:  # ``synthetic,n=100``: a name whose head is left out
        name, sep, args = head, comma, f"{items}{sep}{args}"
    name = name.strip()
    if name not in forms:
        raise unknown_name(what, name, forms, hint)
    form = forms[name]
    if not isinstance(form, Form):
        form = Form(keys=tuple(form))
    if sep == "," and form.head is None:
        raise ValueError(_with_hint(f"{what} spec {text!r}: write {name}:{args.strip()}", hint))
    return _Spec(text, name, form, sep, args.strip(), what, noun, hint)


def _item(spec: _Spec, pos: int, item: str, valid: Sequence[str]) -> tuple[str, Any]:
    """``(key, value)`` of the non-empty item at position ``pos`` of ``spec``'s arguments: a
    bare first word after ``:`` is the ``head``; a ``key=value`` item's key must be valid."""
    form = spec.form
    key, eq, value = item.partition("=")
    key, value = key.strip(), value.strip()
    if not eq and pos == 0 and form.head is not None and spec.sep == ":":
        return form.head, item
    if not eq or not key or not value:
        raise spec.error(f"{spec.what} spec {spec.text!r}: expected key=value, got {item!r}")
    check_keys(spec.what, spec.name, [key], valid, noun=spec.noun, hint=spec.hint)
    return key, value if key in (form.head, form.rest) else parse_value(value)


def _params(spec: _Spec) -> dict[str, Any]:
    """The parameters of ``spec`` in the order given: its ``rest`` (all the text), else its
    items; a key given twice raises ValueError."""
    form, args = spec.form, spec.args
    params: dict[str, Any] = {}
    if form.rest is not None and args:
        prefix = f"{form.rest}="
        params[form.rest] = args[len(prefix):].strip() if args.startswith(prefix) else args
        args = ""
    valid = form.valid_keys()
    for pos, item in enumerate(filter(None, (a.strip() for a in args.split(",")))):
        key, value = _item(spec, pos, item, valid)
        if key in params:
            raise spec.error(f"{spec.what} spec {spec.text!r}: {spec.noun} {key!r} is given twice")
        params[key] = value
    return params


def _check_params(spec: _Spec, params: Mapping[str, Any]) -> None:
    """ValueError when the ``head`` value is not one of its choices or a required key is
    missing."""
    form, name = spec.form, spec.name
    if form.head is not None and form.head_choices and form.head in params:
        if params[form.head] not in form.head_choices:
            raise spec.error(
                f"unknown {name} {form.head} {params[form.head]!r}: choose one of "
                f"{', '.join(form.head_choices)}{closest(params[form.head], form.head_choices)}")
    missing = [k for k in form.required if k not in params]
    if missing:
        if form.rest in missing:
            raise spec.error(f"{name}:{form.rest.upper()} needs a {form.rest} after '{name}:'")
        raise spec.error(f"{spec.what} spec {spec.text!r} needs {' and '.join(missing)}")


def parse_spec(spec: str, forms: Mapping[str, Form | Sequence[str]], what: str, *,
               noun: str = "parameter", hint: str = "") -> tuple[str, dict[str, Any]]:
    """Split ``spec`` into its name and parameters, checked against ``forms``.

    Parameters
    ----------
    spec : str
        ``"name"`` or ``"name:key=value,..."`` (see the module's grammar).
    forms : mapping
        Every valid name → its `Form` (or just the sequence of its keys). Error messages list
        the names in this order.
    what : str
        What the spec describes (``"compressor"``, ``"topology"``), for the messages.
    noun : str
        What a key is called in the messages (``"parameter"``, ``"key"``).
    hint : str
        Appended to every message (e.g. the forms a spec may take).

    Returns
    -------
    name : str
    params : dict
        Key → value in the order given: `parse_value` of ``key=value`` items, the text of a
        ``head`` or ``rest``.

    Raises
    ------
    ValueError
        ``spec`` is empty or not a string, its name is unknown, an item has no ``=`` (or an empty
        key or value), a key is unknown or given twice, a ``head`` value is not one of its
        choices, or a required key is missing.
    """
    parsed = _split_name(spec, forms, what, noun, hint)
    params = _params(parsed)
    _check_params(parsed, params)
    return parsed.name, params
