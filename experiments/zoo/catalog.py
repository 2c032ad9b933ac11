"""Every data set of :mod:`experiments.zoo.papers` and :mod:`experiments.zoo.mnist1d` by name: ``paper_data(NAME)``."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .mnist1d import mnist1d
from .papers import CIFAR_PRESETS, PaperData, chebyshev, circles, copying, deep_linear, moons, sorting

GENERATED: dict[str, Callable[[], PaperData]] = {
    "mnist1d": mnist1d, "moons": moons, "circles": circles, "sorting": sorting, "copying": copying,
}
PATTERNS = {"chebyshev-K-N": re.compile(r"chebyshev-(\d+)-(\d+)"), "linear-N-D": re.compile(r"linear-(\d+)-(\d+)")}


def paper_data_names() -> list[str]:
    """Every name :func:`paper_data` accepts (CIFAR presets take ``:PATH``)."""
    return [f"{name}:PATH" for name in CIFAR_PRESETS] + list(GENERATED) + list(PATTERNS)


def paper_data(spec: str) -> PaperData:
    """The set named ``spec``: a CIFAR preset as ``NAME:PATH`` (the folder of the python batches), a generated set
    by name, ``chebyshev-K-N`` or ``linear-N-D``. An unknown name raises ValueError listing the valid ones and the
    closest."""
    name, _, path = spec.partition(":")
    if name in CIFAR_PRESETS:
        if not path:
            raise ValueError(f"data {name!r} is CIFAR-10: give the folder of its python batches as {name}:PATH")
        return CIFAR_PRESETS[name](Path(path))
    if path:
        raise ValueError(f"data {name!r} is generated and takes no :PATH")
    if name in GENERATED:
        return GENERATED[name]()
    for pattern, builder in ((PATTERNS["chebyshev-K-N"], chebyshev), (PATTERNS["linear-N-D"], deep_linear)):
        match = pattern.fullmatch(name)
        if match:
            return builder(int(match.group(1)), int(match.group(2)))
    from difflib import get_close_matches

    close = get_close_matches(name, list(CIFAR_PRESETS) + list(GENERATED), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown data set {name!r}{hint}; valid: {', '.join(paper_data_names())}")
