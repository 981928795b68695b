"""How flows reach the instance: settings from the environment, built once per run."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ecotaxa_core.instance import Instance
from ecotaxa_core.settings import Settings


@contextmanager
def open_instance() -> Iterator[Instance]:
    inst = Instance.open(Settings())
    try:
        yield inst
    finally:
        inst.close()
