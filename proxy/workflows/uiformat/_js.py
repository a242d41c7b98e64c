"""JavaScript's value semantics, where the frontend's output depends on them.

Truthiness, `String(value)`, a <textarea>'s value, litegraph's slot type check, dynamic
prompts, the key order of an object, and the coercions JSON ids and numbers go through.
"""

from __future__ import annotations

import math
import random
import re
from datetime import datetime
from typing import Any, Final


class Undefined:
    """JavaScript's `undefined`: a widget value JSON.stringify leaves out."""

    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Final = Undefined()


def truthy(value: Any) -> bool:
    """Whether JavaScript takes `value` as true."""
    if value is None or value is UNDEFINED:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    if isinstance(value, bool | int | float | str):
        return bool(value)
    return True


def js_string(value: Any) -> str:
    """`String(value)` in JavaScript."""
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        text = repr(value)
        if "e" in text:
            mantissa, exponent = text.split("e")
            return f"{mantissa}e{'-' if exponent.startswith('-') else '+'}{exponent.lstrip('+-0')}"
        return text
    if isinstance(value, list):
        return ",".join("" if v is None else js_string(v) for v in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def textarea(value: Any) -> str:
    """What a <textarea> gives back after `value` is assigned (null is empty, CR LF is LF)."""
    text = "" if value is None else js_string(value)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def is_valid_connection(type_a: Any, type_b: Any) -> bool:
    """litegraph's slot type check: wildcards, exact match, or any of comma-listed types."""
    a: Any = 0 if type_a in ("", "*") else type_a
    b: Any = 0 if type_b in ("", "*") else type_b
    if not truthy(a) or not truthy(b) or a == b:
        return True
    left, right = str(a).lower(), str(b).lower()
    if "," not in left and "," not in right:
        return left == right
    return any(is_valid_connection(x, y) for x in left.split(",") for y in right.split(","))


def dynamic_prompt(text: str, rng: random.Random) -> str:
    """The frontend's dynamic prompt: strip C-style comments, pick one of each {a|b|c}."""
    text = re.sub(r"/\*[\s\S]*?\*/|//[^\n\r\u2028\u2029]*", "", text)
    pos = 0

    def escape() -> str:
        nonlocal pos
        following = text[pos] if pos < len(text) else "undefined"
        pos += 1
        return "\\" + following

    def choice() -> str:
        nonlocal pos
        options: list[str] = []
        current = ""
        depth = 0
        while pos < len(text):
            char = text[pos]
            pos += 1
            if char == "\\":
                current += escape()
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                if not depth:
                    break
                depth -= 1
            elif char == "|" and not depth:
                options.append(current)
                current = ""
                continue
            current += char
        options.append(current)
        return dynamic_prompt(options[math.floor(rng.random() * len(options))], rng)

    result = ""
    while pos < len(text):
        char = text[pos]
        pos += 1
        if char == "\\":
            result += escape()
        elif char == "{":
            result += choice()
        else:
            result += char
    return re.sub(r"\\([{}|])", r"\1", result)


def id_string(value: Any) -> str:
    """A node or link id as the frontend keys it (`String(id)`, 5.0 as "5")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return js_string(value)


def as_int(value: Any, default: int = 0) -> int:
    """An integer read from JSON (a slot, a link id), or `default`."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return default
    return default


def js_key_order(output: dict[str, Any]) -> dict[str, Any]:
    """A JavaScript object's key order: array-index keys ascending, then the rest as added."""
    indexed = [k for k in output if k.isdigit() and str(int(k)) == k and int(k) < 2**32 - 1]
    rest = [k for k in output if k not in set(indexed)]
    return {k: output[k] for k in (*sorted(indexed, key=int), *rest)}


def format_date(pattern: str, now: datetime) -> str:
    """The frontend's "%date:yyyy-MM-dd%" formatting."""
    parts = {"d": now.day, "M": now.month, "h": now.hour, "m": now.minute, "s": now.second}

    def one(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "yy":
            return str(now.year)[2:]
        if text == "yyyy":
            return str(now.year)
        if text[0] in parts:
            return str(parts[text[0]]).rjust(len(text), "0")
        return text

    return re.sub(r"dd?|MM?|hh?|mm?|ss?|yyy?y?", one, pattern)
