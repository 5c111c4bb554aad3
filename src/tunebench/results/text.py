"""Numbers and words as every table, figure and the paper print them: one place per format."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

MINUS = "\u2212"


def number(value: float, digits: int = 1) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def interval(value: float, low: float, high: float, show: Callable[[float], str] = number) -> str:
    """``value [low, high]`` in the units given, each shown by ``show``; the value alone without an interval."""
    if value is None or not math.isfinite(value):
        return "–"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return show(value)
    return f"{show(value)} [{show(low)}, {show(high)}]"


def signed(value: float, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{abs(value):.{digits}f}"
    return ("+" if value >= 0 else MINUS) + text


def count(value: float) -> str:
    """Large counts readably: 3,712,004 → 3.71M; small ones as integers."""
    if value is None or not math.isfinite(value):
        return "–"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def hours(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.3f}" if value < 1 else f"{value:.1f}"


def plain(value: float, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:,.{digits}f}"


def cost_unit(kinds: Iterable[str]) -> str:
    kinds = {k for k in kinds if k}
    return f"{kinds.pop()}-hours" if len(kinds) == 1 else "device-hours"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "≈": r"$\approx$",
    ">": r"$>$",
    "<": r"$<$",
    "→": r"$\rightarrow$",
    "×": r"$\times$",
    MINUS: r"$-$",
    "–": "--",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
