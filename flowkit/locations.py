"""Where the kit's data lives: the one module that knows.

The kit is used from a clone of its repository (the wheel packages only code): ``data/``
holds the shipped question set, the kit's trained model delta and the stored results. It is
found in the checkout beside the ``flowkit`` package, or wherever the environment variable
``FLOWKIT_DATA`` points.
"""

from __future__ import annotations

import os
from pathlib import Path

from flowkit.errors import FlowkitError

#: the environment variable that points at a ``data/`` folder outside the checkout
DATA_ENV = "FLOWKIT_DATA"


class DataNotFoundError(FlowkitError):
    """The kit's ``data/`` folder is neither in the checkout nor where ``FLOWKIT_DATA`` points."""


def data_dir() -> Path:
    """The kit's ``data/`` folder (``$FLOWKIT_DATA``, else the checkout's ``data/``), or a clear error."""
    configured = os.environ.get(DATA_ENV)
    if configured:
        folder = Path(configured).expanduser()
        if not folder.is_dir():
            raise DataNotFoundError(
                f"{DATA_ENV}={configured} is not a folder. Point it at the data/ folder of a flowkit checkout "
                f"(it holds questions/, models/ and results/), or unset it to use the checkout's own."
            )
        return folder
    folder = Path(__file__).resolve().parents[1] / "data"
    if folder.is_dir():
        return folder
    raise DataNotFoundError(
        "flowkit cannot find its data/ folder: the installed package holds only code. Clone the kit's "
        f"repository and work from it (pip install -e . there), or set {DATA_ENV}=/path/to/flowkit/data."
    )


def data_path(*parts: str) -> Path:
    """A path inside the kit's ``data/`` folder, e.g. ``data_path("results", "fidelity.json")``."""
    return data_dir().joinpath(*parts)


__all__ = ["DATA_ENV", "DataNotFoundError", "data_dir", "data_path"]
