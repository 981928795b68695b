"""Problems found in import sources, as typed records with their location.

Every problem of every file is collected in an :class:`ImportReport` before
anything is written; a non-empty report is raised as :class:`TsvFormatError`,
whose message lists each problem with its file, line and column.

>>> report = ImportReport("bundle.zip")
>>> report.add("ecotaxa_a.tsv", 3, "object_lat", "100", "bad_lat",
...            "invalid latitude '100' (must be within -90/+90)")
>>> print(report)
1 problem in bundle.zip:
  ecotaxa_a.tsv line 3, column object_lat: invalid latitude '100' (must be within -90/+90)
>>> report.issues[0].code
'bad_lat'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ecotaxa_core.errors import EcoTaxaError

__all__ = ["TsvIssue", "ImportReport", "TsvFormatError", "MAX_ISSUES_PER_FILE"]

MAX_ISSUES_PER_FILE = 100


@dataclass(frozen=True)
class TsvIssue:
    """One problem: where it is (file, line, column), the faulty value and what is wrong.

    ``line`` counts as EcoTaxa does: 1 is the header, 2 the types, data from 3;
    it is None for problems of a whole file. ``code`` is a stable identifier
    (``bad_float``, ``missing_image`` ...) for programs; ``message`` is for people.
    """

    path: str
    line: int | None
    column: str | None
    value: str | None
    code: str
    message: str

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f" line {self.line}"
        if self.column:
            where += f", column {self.column}" if self.line is not None else f" column {self.column}"
        return f"{where}: {self.message}"


@dataclass
class ImportReport:
    """Every problem found in one import source, at most ``max_per_file`` kept per file."""

    source: str = ""
    max_per_file: int = MAX_ISSUES_PER_FILE
    issues: list[TsvIssue] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, path: str, line: int | None, column: str | None, value: str | None,
            code: str, message: str) -> None:
        n = self.counts.get(path, 0)
        self.counts[path] = n + 1
        if n < self.max_per_file:
            self.issues.append(TsvIssue(path, line, column, value, code, message))

    @property
    def n_issues(self) -> int:
        """All problems found, including those left out of :attr:`issues`."""
        return sum(self.counts.values())

    def __len__(self) -> int:
        return self.n_issues

    def codes(self) -> set[str]:
        return {i.code for i in self.issues}

    def raise_if_any(self) -> None:
        if self.n_issues:
            raise TsvFormatError(self)

    def __str__(self) -> str:
        n = self.n_issues
        lines = [f"{n} problem{'' if n == 1 else 's'} in {self.source or 'the import source'}:"]
        for issue in sorted(self.issues, key=lambda i: (i.path, i.line or 0)):
            lines.append(f"  {issue}")
        for path, total in self.counts.items():
            if total > self.max_per_file:
                lines.append(f"  ... and {total - self.max_per_file} more in {path}")
        return "\n".join(lines)


class TsvFormatError(EcoTaxaError, ValueError):
    """An import source has problems; ``report`` holds every one of them."""

    def __init__(self, report: ImportReport):
        self.report = report
        super().__init__(str(report))

    @property
    def issues(self) -> list[TsvIssue]:
        return self.report.issues
