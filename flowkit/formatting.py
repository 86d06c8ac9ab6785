"""How the kit prints numbers: only digits that come out the same on every CPU.

Two machines compute the same knockout with different float kernels (AVX2, AVX-512, PyTorch's
non-SIMD ``ATEN_CPU_CAPABILITY=default``, MKL's code paths); the results agree to about 1e-5 in
p(answer), not bit for bit. So every probability the kit prints has **3 decimals** and every
% change **1 decimal** — coarse enough that another CPU's rounding cannot reach the printed
digits unless a value sits right on a rounding boundary (README, "Outputs that do not depend on
the CPU", says how the checked chapter cells are kept away from boundaries). ``check``, the
command line, the answer text and the chapters all print through these functions.

>>> format_prob(0.81752)
'0.818'
>>> format_pct_change(-45.97431)
'-46.0 %'
>>> format_pct_change(-0.04)          # no sign on a change that rounds to zero
'0.0 %'
>>> format_share(0.86143)
'86.1 %'

Setting ``FLOWKIT_RECORD_NUMBERS=FILE`` appends every number printed through this module to
FILE (one JSON line: the kind, the raw value, the decimals and the text), so a test can measure how far
each printed value sits from a rounding boundary (``tests/test_cross_kernel.py``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable

import pandas as pd

#: Decimals of a printed probability (p(option), p(true)).
PROB_DECIMALS = 3
#: Decimals of a printed % change (the paper's ``100 · (p_new − p_base) / p_base``).
PCT_DECIMALS = 1
#: Decimals of a printed share shown as a percentage (edges kept, accuracy).
SHARE_DECIMALS = 1

RECORD_ENV = "FLOWKIT_RECORD_NUMBERS"


def _record(kind: str, value: float, decimals: int, text: str) -> None:
    path = os.environ.get(RECORD_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "value": float(value), "decimals": decimals, "text": text}) + "\n")


def _fixed(kind: str, value: float, decimals: int, signed: bool = False) -> str:
    value = float(value)
    if math.isnan(value):
        return "n/a"
    text = f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
    if float(text) == 0.0:  # "-0.0" and "+0.0" would show a sign that another CPU's rounding can flip
        text = f"{0:.{decimals}f}"
    _record(kind, value, decimals, text)
    return text


def format_prob(p: float, decimals: int = PROB_DECIMALS) -> str:
    """A probability with 3 decimals (``'0.818'``); NaN prints as ``'n/a'``."""
    return _fixed("prob", p, decimals)


def format_pct_change(pct: float, decimals: int = PCT_DECIMALS) -> str:
    """A % change with its sign and 1 decimal (``'-35.2 %'``, ``'+161.1 %'``, ``'0.0 %'``)."""
    text = _fixed("pct_change", pct, decimals, signed=True)
    return text if text == "n/a" else text + " %"


def format_share(share: float, decimals: int = SHARE_DECIMALS) -> str:
    """A share in [0, 1] as a percentage with 1 decimal (``0.8614`` → ``'86.1 %'``)."""
    text = _fixed("share", 100.0 * float(share), decimals)
    return text if text == "n/a" else text + " %"


def format_table(
    table: pd.DataFrame, probs: Iterable[str] = (), pct_changes: Iterable[str] = (), shares: Iterable[str] = ()
) -> pd.DataFrame:
    """A copy of ``table`` whose named columns are text from the formatters above (for printing)."""
    shown = table.copy()
    for columns, fmt in ((probs, format_prob), (pct_changes, format_pct_change), (shares, format_share)):
        for column in columns:
            shown[column] = [fmt(v) for v in table[column]]
    return shown


def rounding_margin(value: float, decimals: int) -> float:
    """How far ``value`` is from the nearest value that rounds differently at ``decimals``.

    The rounding boundaries at ``decimals`` lie half a unit between printed values: for 3
    decimals, 0.0005, 0.0015, ...; a value 1e-6 from one prints differently on a CPU whose
    rounding moves it by 2e-6.
    """
    unit = 10.0**-decimals
    offset = (float(value) / unit - 0.5) % 1.0  # 0 at a boundary
    return min(offset, 1.0 - offset) * unit


__all__ = [
    "PCT_DECIMALS",
    "PROB_DECIMALS",
    "RECORD_ENV",
    "SHARE_DECIMALS",
    "format_pct_change",
    "format_prob",
    "format_share",
    "format_table",
    "rounding_margin",
]
