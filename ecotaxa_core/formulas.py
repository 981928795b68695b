"""Summary formulas: EcoTaxa's project variables, parsed safely and evaluated per object.

EcoTaxa computes concentrations and biovolumes from three per-project formulas
written in Python syntax over free columns (``ProjectVars``, the
``bodc_variables`` of a project): ``subsample_coef``, ``total_water_volume``
(m³) and ``individual_volume`` (mm³). References are ``<prefix>.<column>`` with
EcoTaxa's prefixes ``obj`` (object), ``sam`` (sample) and ``ssm`` (sub-sample:
the acquisition's or the process's column), plus ``acq`` and ``process`` here.
Predefined numbers are referable too (``obj.depth_min``, ``sam.lat`` ...).

EcoTaxa ``eval``s the formulas; here a formula is parsed into a syntax tree
and only numbers, ``+ - * / **``, unary minus, parentheses, ``math.pi``,
``math.e`` and the functions ``math.sqrt``, ``math.log``, ``math.log10``,
``math.exp`` and ``abs`` are accepted; anything else is refused with a
:class:`FormulaError` before any value is read. Evaluation never raises: a
missing or non-numeric value, a division by zero or a domain error gives NaN.

>>> f = Formula("4.0/3.0*math.pi*(math.sqrt(obj.area/math.pi)*ssm.pixel_size)**3")
>>> f.references
(('obj', 'area'), ('ssm', 'pixel_size'))
>>> round(f.evaluate({("obj", "area"): 3.14159265, ("ssm", "pixel_size"): 2.0}), 4)
33.5103
>>> Formula("1/ssm.sub_part").evaluate({("ssm", "sub_part"): 0.0})
nan
>>> Formula("__import__('os').system('true')")
Traceback (most recent call last):
...
ecotaxa_core.formulas.FormulaError: formula "__import__('os').system('true')": function calls \
other than math.sqrt, math.log, math.log10, math.exp and abs are not allowed
"""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ecotaxa_core.errors import EcoTaxaError

__all__ = ["FormulaError", "Formula", "FORMULA_NAMES", "PREFIXES", "DEFAULT_FORMULAS",
           "INSTRUMENT_FORMULAS", "default_formulas", "check_formulas", "as_number"]

FORMULA_NAMES = ("subsample_coef", "total_water_volume", "individual_volume")
# Prefixes a reference may use: EcoTaxa's, plus the TSV prefixes of the parents.
PREFIXES = ("obj", "sam", "ssm", "acq", "process")

# EcoTaxa's default project formulas (ZooScan-like: sub_part is the splitting
# denominator, tot_vol in litres, pixel_size in mm).
DEFAULT_FORMULAS: dict[str, str] = {
    "subsample_coef": "1/ssm.sub_part",
    "total_water_volume": "sam.tot_vol/1000",
    "individual_volume": "4.0/3.0*math.pi*(math.sqrt(obj.area/math.pi)*ssm.pixel_size)**3",
}
# Per instrument (matched on the lower-cased instrument name). The UVPs image all
# the water they see (no sub-sampling) and give the sampled volume in m³ in
# sam.tot_vol, as EcoTaxa's UVP formulas; acq_pixel is in mm on the UVP5 but in
# µm on the UVP6 (73 in its example bundle), hence the /1000.
INSTRUMENT_FORMULAS: dict[str, dict[str, str]] = {
    "zooscan": DEFAULT_FORMULAS,
    "uvp5": {
        "subsample_coef": "1",
        "total_water_volume": "sam.tot_vol",
        "individual_volume": "4.0/3.0*math.pi*(math.sqrt(obj.area/math.pi)*ssm.pixel)**3",
    },
    "uvp6": {
        "subsample_coef": "1",
        "total_water_volume": "sam.tot_vol",
        "individual_volume": "4.0/3.0*math.pi*(math.sqrt(obj.area/math.pi)*ssm.pixel/1000)**3",
    },
}

_MAX_LENGTH = 500
_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Pow: operator.pow,
}
_FUNCTIONS: dict[tuple[str, ...], Callable[[float], float]] = {
    ("math", "sqrt"): math.sqrt, ("math", "log"): math.log, ("math", "log10"): math.log10,
    ("math", "exp"): math.exp, ("abs",): abs,
}
_CONSTANTS = {("math", "pi"): math.pi, ("math", "e"): math.e}

Reference = tuple[str, str]


class FormulaError(EcoTaxaError, ValueError):
    """A formula that cannot be parsed or uses something not allowed."""

    def __init__(self, formula: str, reason: str, name: str | None = None):
        self.formula, self.reason, self.name = formula, reason, name
        where = f"{name} = " if name else ""
        super().__init__(f'formula {where}"{formula}": {reason}')


def default_formulas(instrument: str | None) -> dict[str, str]:
    """EcoTaxa's formulas for an instrument (its defaults for an unknown one).

    >>> default_formulas("UVP6")["subsample_coef"], default_formulas(None)["subsample_coef"]
    ('1', '1/ssm.sub_part')
    """
    key = (instrument or "").strip().lower()
    return dict(INSTRUMENT_FORMULAS.get(key, DEFAULT_FORMULAS))


def as_number(value: object) -> float | None:
    """A finite float from a stored value; text too, as EcoTaxa's ``float()`` (None if not).

    >>> as_number("73"), as_number(2), as_number("n/a"), as_number(None), as_number(float("inf"))
    (73.0, 2.0, None, None, None)
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def check_formulas(formulas: Mapping[str, str]) -> dict[str, "Formula"]:
    """Parse each named formula; unknown names and bad formulas raise FormulaError."""
    parsed = {}
    for name, text in formulas.items():
        if name not in FORMULA_NAMES:
            raise FormulaError(str(text), f"unknown formula name {name!r} (expected one of "
                                          f"{', '.join(FORMULA_NAMES)})", name)
        parsed[name] = Formula(text, name)
    return parsed


@dataclass(frozen=True)
class Formula:
    """A parsed formula: its references and a function evaluating it.

    Parameters
    ----------
    text : the formula, e.g. ``"sam.tot_vol/1000"``.
    name : what it computes (for messages), e.g. ``"total_water_volume"``.
    """

    text: str
    name: str | None = None
    references: tuple[Reference, ...] = field(init=False)
    _fn: Callable[[Mapping[Reference, float]], float] = field(init=False, repr=False,
                                                               compare=False)

    def __post_init__(self) -> None:
        text = self.text if isinstance(self.text, str) else str(self.text)
        if not text.strip():
            raise FormulaError(text, "the formula is empty", self.name)
        if len(text) > _MAX_LENGTH:
            raise FormulaError(text[:40] + "...", f"longer than {_MAX_LENGTH} characters",
                               self.name)
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            raise FormulaError(text, f"not a valid expression ({type(e).__name__})",
                               self.name) from None
        refs: list[Reference] = []
        try:
            fn = _Compiler(text, self.name, refs).compile(tree.body)
        except RecursionError:
            raise FormulaError(text, "nested too deeply", self.name) from None
        object.__setattr__(self, "references", tuple(dict.fromkeys(refs)))
        object.__setattr__(self, "_fn", fn)

    def evaluate(self, values: Mapping[Reference, float]) -> float:
        """The formula's value (NaN when a reference is missing or the result undefined)."""
        try:
            result = self._fn(values)
        except (ArithmeticError, ValueError, TypeError, KeyError, RecursionError):
            return math.nan
        if isinstance(result, complex) or not isinstance(result, (int, float)):
            return math.nan
        result = float(result)
        return result if math.isfinite(result) else math.nan


class _Compiler:
    """Turns a whitelisted syntax tree into nested closures (no ``eval``)."""

    def __init__(self, text: str, name: str | None, refs: list[Reference]):
        self.text, self.name, self.refs = text, name, refs

    def fail(self, reason: str):
        raise FormulaError(self.text, reason, self.name)

    def compile(self, node: ast.AST) -> Callable[[Mapping[Reference, float]], float]:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                self.fail(f"only numbers are allowed as constants, not {node.value!r}")
            value = float(node.value)
            return lambda _v: value
        if isinstance(node, ast.BinOp):
            op = _BINARY.get(type(node.op))
            if op is None:
                self.fail(f"operator {type(node.op).__name__} is not allowed "
                          "(only + - * / ** and parentheses)")
            left, right = self.compile(node.left), self.compile(node.right)
            return lambda v: op(left(v), right(v))
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.USub, ast.UAdd)):
                self.fail(f"operator {type(node.op).__name__} is not allowed")
            operand = self.compile(node.operand)
            if isinstance(node.op, ast.USub):
                return lambda v: -operand(v)
            return operand
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted in _CONSTANTS:
                value = _CONSTANTS[dotted]
                return lambda _v: value
            if dotted is None or len(dotted) != 2 or dotted[0] not in PREFIXES:
                self.fail(f"{ast.unparse(node)!r} is not a reference: use <prefix>.<column> "
                          f"with a prefix among {', '.join(PREFIXES)}")
            ref: Reference = (dotted[0], dotted[1])
            self.refs.append(ref)
            return lambda v: v[ref]
        if isinstance(node, ast.Name):
            self.fail(f"unknown name {node.id!r}: columns are written <prefix>.<column> "
                      f"with a prefix among {', '.join(PREFIXES)}")
        self.fail(f"{type(node).__name__} expressions are not allowed")

    def _call(self, node: ast.Call):
        target = _dotted(node.func)
        fn = _FUNCTIONS.get(target) if target else None
        if fn is None:
            self.fail("function calls other than math.sqrt, math.log, math.log10, math.exp and "
                      "abs are not allowed")
        if len(node.args) != 1 or node.keywords:
            self.fail(f"{'.'.join(target)} takes exactly one argument")
        arg = self.compile(node.args[0])
        return lambda v: fn(arg(v))


def _dotted(node: ast.AST) -> tuple[str, ...] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return tuple(reversed(parts))
