"""The objects of an import, kept on disk as they are read, so memory stays flat.

An :class:`ObjectSpool` is an append-only sequence of
:class:`~ecotaxa_core.import_plan.ObjectPlan`: the last ``chunk`` objects stay in
memory, older ones are pickled in chunks to an anonymous temporary file (deleted
by the system when the spool is closed or the process dies, even killed), and
each iteration streams them back in order. An import of any size then holds a
few thousand objects at a time, plus what it needs per object to spot
duplicates (the object ids).

Images of an object that was spilled already (a file listing an object's
image rows far apart) are attached later by :meth:`ObjectSpool.add_late_image`,
which calls back with the object's images so the caller can refuse a
duplicate; the chunk is then rewritten once at the end of the reading.

>>> from ecotaxa_core.import_plan import ObjectPlan
>>> spool = ObjectSpool(chunk=2)
>>> for i in range(5):
...     _ = spool.append(ObjectPlan(orig_id=f"o{i}", rel="a.tsv", line=3 + i))
>>> len(spool), [o.orig_id for o in spool], spool.n_spilled
(5, ['o0', 'o1', 'o2', 'o3', 'o4'], 4)
>>> [[o.orig_id for o in b] for b in spool.batches(3)]
[['o0', 'o1', 'o2'], ['o3', 'o4']]
>>> spool.close()
"""

from __future__ import annotations

import pickle
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from pathlib import Path
from typing import IO, Any, TypeVar

from ecotaxa_core.import_plan import FreeValues, ImagePlan, ObjectPlan

__all__ = ["ObjectSpool", "CHUNK", "batched"]

CHUNK = 2000  # objects pickled together
T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in order, ``size`` at a time (the last batch may be shorter); Python
    3.12's ``itertools.batched``, as lists.

    >>> list(batched(range(5), 2))
    [[0, 1], [2, 3], [4]]
    """
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class ObjectSpool:
    """Append-only objects, the older ones on disk (in ``spill_dir``, or the system's
    temporary folder). Iterating is allowed any number of times once appending stops;
    :meth:`close` (or the end of a ``with`` block) frees the file.
    """

    def __init__(self, spill_dir: Path | None = None, *, chunk: int = CHUNK):
        if chunk < 1:
            raise ValueError("a spool chunk holds at least one object")
        self._dir, self._chunk = spill_dir, chunk
        self._records = _Records()
        self._file: IO[bytes] | None = None
        self._spilled: list[tuple[int, int, int]] = []  # (offset, length, n objects) per chunk
        self._tail: list[ObjectPlan] = []
        self._n = 0
        # orig_id -> images to add to a spilled object, and the chunk it is in.
        self._late: dict[str, list[ImagePlan]] = {}
        self._late_chunks: set[int] = set()

    def __enter__(self) -> "ObjectSpool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._spilled, self._tail, self._n = [], [], 0

    def __len__(self) -> int:
        return self._n

    @property
    def n_spilled(self) -> int:
        """Objects on disk."""
        return sum(n for _, _, n in self._spilled)

    def append(self, obj: ObjectPlan) -> int:
        """Add ``obj``; its position."""
        self._tail.append(obj)
        self._n += 1
        if len(self._tail) > self._chunk:
            self._spill(self._tail[:self._chunk])
            self._tail = self._tail[self._chunk:]
        return self._n - 1

    def extend(self, objects: Iterable[ObjectPlan]) -> None:
        for obj in objects:
            self.append(obj)

    def in_memory(self, position: int) -> ObjectPlan | None:
        """The object at ``position`` if it is still in memory (None: spilled)."""
        first = self._n - len(self._tail)
        return self._tail[position - first] if position >= first else None

    def add_late_image(self, position: int, orig_id: str, image: ImagePlan) -> None:
        """Give the spilled object at ``position`` one more image; it is added by
        :meth:`attach_late_images`."""
        self._late.setdefault(orig_id, []).append(image)
        self._late_chunks.add(self._chunk_of(position))

    def attach_late_images(self, accept: Callable[[ObjectPlan, ImagePlan], bool]) -> None:
        """Add the late images to their objects (rewriting their chunks), each one that
        ``accept(obj, image)`` allows (it sees the images added so far)."""
        if not self._late:
            return
        for index in sorted(self._late_chunks):
            objects = self._read(index)
            for obj in objects:
                for image in self._late.pop(obj.orig_id, ()):
                    if accept(obj, image):
                        obj.images.append(image)
            self._rewrite(index, objects)
        self._late_chunks.clear()
        if self._late:  # cannot happen: every late image names a spilled object
            raise RuntimeError(f"late images of unknown objects: {sorted(self._late)[:5]}")

    def __iter__(self) -> Iterator[ObjectPlan]:
        for batch in self._chunks():
            yield from batch

    def batches(self, size: int) -> Iterator[list[ObjectPlan]]:
        """The objects, in order, ``size`` at a time (the last batch may be shorter)."""
        return batched(self, size)

    # -- internals ------------------------------------------------------------------
    def _chunks(self) -> Iterator[list[ObjectPlan]]:
        for index in range(len(self._spilled)):
            yield self._read(index)
        if self._tail:
            yield list(self._tail)

    def _chunk_of(self, position: int) -> int:
        return position // self._chunk  # every spilled chunk holds ``chunk`` objects

    def _spill(self, objects: list[ObjectPlan]) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(
                prefix="ecotaxa-import-objects-", dir=str(self._dir) if self._dir else None)
        self._spilled.append(self._write(objects))

    def _write(self, objects: list[ObjectPlan]) -> tuple[int, int, int]:
        assert self._file is not None
        data = pickle.dumps([self._records.encode(o) for o in objects],
                            protocol=pickle.HIGHEST_PROTOCOL)
        self._file.seek(0, 2)
        offset = self._file.tell()
        self._file.write(data)
        return offset, len(data), len(objects)

    def _read(self, index: int) -> list[ObjectPlan]:
        assert self._file is not None
        offset, length, _ = self._spilled[index]
        self._file.seek(offset)
        decode = self._records.decode
        return [decode(r) for r in pickle.loads(self._file.read(length))]

    def _rewrite(self, index: int, objects: list[ObjectPlan]) -> None:
        self._spilled[index] = self._write(objects)  # the old bytes stay, unused


_OBJECT_FIELDS = ObjectPlan.__slots__
_IMAGE_FIELDS = ImagePlan.__slots__
_EXTRA, _IMAGES, _PRESENT = (_OBJECT_FIELDS.index(n) for n in ("extra", "images", "present"))


class _Records:
    """Objects as lists of plain values, which pickle ten times faster than the
    dataclasses; what many objects share (a file's column names and number layout)
    is kept here once and named by its index."""

    def __init__(self) -> None:
        self._shared: list[Any] = []
        self._index: dict[int, int] = {}  # id() of a shared value -> its index
        self._object_values = attrgetter(*_OBJECT_FIELDS)
        self._image_values = attrgetter(*_IMAGE_FIELDS)

    def _share(self, value: Any) -> int:
        index = self._index.get(id(value))
        if index is None:
            index = self._index[id(value)] = len(self._shared)
            self._shared.append(value)  # kept alive: its id() stays its own
        return index

    def encode(self, obj: ObjectPlan) -> list:
        values = list(self._object_values(obj))
        extra = values[_EXTRA]
        if isinstance(extra, FreeValues):
            values[_EXTRA] = (self._share(extra.layout), extra.numbers.tobytes(), extra.texts)
        else:
            values[_EXTRA] = dict(extra)
        values[_IMAGES] = [self._image_values(im) for im in values[_IMAGES]]
        values[_PRESENT] = self._share(values[_PRESENT])
        return values

    def decode(self, values: list) -> ObjectPlan:
        extra = values[_EXTRA]
        if type(extra) is tuple:
            numbers = array("d")
            numbers.frombytes(extra[1])
            values[_EXTRA] = FreeValues(self._shared[extra[0]], numbers, extra[2])
        values[_IMAGES] = [ImagePlan(*im) for im in values[_IMAGES]]
        values[_PRESENT] = self._shared[values[_PRESENT]]
        return ObjectPlan(*values)
