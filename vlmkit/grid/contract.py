"""The parameter contract between a grid and its notebooks, checked before anything runs.

A notebook declares its parameters in its ``parameters``-tagged cell, typed like ``n_images: int = 16``;
:func:`notebook_parameters` reads them with papermill's own inspection (completed from the cell's
syntax for annotations papermill's pattern misses, such as ``int | None``). :func:`check_parameters`
refuses a grid whose runs carry a parameter no listed notebook declares, a value of the wrong type for
a notebook that declares it, or a name in a list parameter that no registry knows (:data:`NAME_CHECKS`),
with a one-line error naming the grid file, the key, where it came from and what was expected::

    grid file 'params/x.yaml': n_images (variants[1] 'toy'): 'many' is a str; 01_data declares n_images: int

:func:`parameters_for` gives each notebook only the parameters it declares, and :func:`check_models`
resolves every model spec of the runs up front (:func:`vlmkit.models.check.check_model_spec`), so
unreachable weights fail in seconds rather than in the first notebook.

This module imports only :mod:`vlmkit.grid.spec` of the grid; papermill, the registries and the
models are imported when a check needs them.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmkit.errors import DataError, InputError, VLMKitError, did_you_mean
from vlmkit.grid.spec import GridSpec, Run

#: Parameters the runner injects into every notebook itself (a grid may not need to declare them).
RUNNER_PARAMETERS = frozenset({"out_dir"})
#: Keys of a run that name it rather than parameterise a notebook (``variants: [{variant: toy, ...}]``).
NAMING_KEYS = frozenset({"variant"})


@dataclass(frozen=True)
class Param:
    """One parameter a notebook declares.

    Attributes:
        name: The variable.
        type: Its annotation as written (``"list[str]"``, ``"int | None"``); ``""`` when it has none.
        default: The source text of its default value (``'["toy:vit"]'``), as papermill reports it.
        help: The comment at the end of its line.
    """

    name: str
    type: str = ""
    default: str = ""
    help: str = ""

    @property
    def expected(self) -> str:
        """The type values are checked against: the annotation, else the default's type, else ``Any``."""
        if self.type:
            return self.type
        ok, value = _literal(self.default)
        if not ok or value is None:
            return "Any"
        if isinstance(value, tuple):
            return "tuple"
        return type(value).__name__ if isinstance(value, (bool, int, float, str, list, dict)) else "Any"

    def accepts(self, value: Any) -> bool:
        """``value`` fits :attr:`expected` (see :func:`check_value`)."""
        return check_value(value, self.expected)


def _literal(src: str) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(src)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


# --------------------------------------------------------------------------------------------- types

_SEQUENCES = {"list", "List", "Sequence", "MutableSequence", "Iterable", "Collection"}
_SETS = {"set", "Set", "frozenset", "FrozenSet", "AbstractSet"}
_TUPLES = {"tuple", "Tuple"}
_MAPPINGS = {"dict", "Dict", "Mapping", "MutableMapping", "OrderedDict"}
_ANY = {"Any", "object"}


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # typing.List, collections.abc.Mapping
        return node.attr
    return ""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _matches(value: Any, node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        if node.value is None:
            return value is None
        if isinstance(node.value, str):  # a quoted annotation: "list[str]"
            try:
                return _matches(value, ast.parse(node.value, mode="eval").body)
            except SyntaxError:
                return True
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _matches(value, node.left) or _matches(value, node.right)
    if isinstance(node, ast.Subscript):
        base = _name(node.value)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base == "Optional":
            return value is None or _matches(value, args[0])
        if base == "Union":
            return any(_matches(value, a) for a in args)
        if base == "Annotated":
            return _matches(value, args[0])
        if base == "Literal":
            return any(isinstance(a, ast.Constant) and a.value == value and type(a.value) is type(value) for a in args)
        if base in _SEQUENCES or base in _SETS:
            return isinstance(value, (list, tuple, set, frozenset)) and all(_matches(v, args[0]) for v in value)
        if base in _TUPLES:
            if not isinstance(value, (list, tuple)):
                return False
            if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
                return all(_matches(v, args[0]) for v in value)
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        if base in _MAPPINGS:
            if not isinstance(value, Mapping):
                return False
            if len(args) == 2:
                return all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
            return True
        return _matches(value, node.value)  # a generic we do not know: check its origin only
    name = _name(node)
    if name in _ANY or not name:
        return True
    if name in ("None", "NoneType"):
        return value is None
    if name == "int":
        return _is_int(value)
    if name == "float":
        return _is_int(value) or isinstance(value, float)
    if name == "complex":
        return _is_int(value) or isinstance(value, (float, complex))
    if name == "bool":
        return isinstance(value, bool)
    if name == "str":
        return isinstance(value, str)
    if name in ("Path", "PathLike", "PurePath"):
        return isinstance(value, (str, Path))
    if name in _SEQUENCES or name in _TUPLES:
        return isinstance(value, (list, tuple))
    if name in _SETS:
        return isinstance(value, (list, tuple, set, frozenset))
    if name in _MAPPINGS:
        return isinstance(value, Mapping)
    return True  # a type of the notebook's own (a class, a TypeVar ...): nothing to check from YAML


def check_value(value: Any, type_str: str, default: Any = None) -> bool:
    """Whether ``value`` fits the annotation ``type_str``.

    ``int`` accepts ints but not bools; ``float`` ints and floats; ``X | None`` (``Optional[X]``) also
    None; ``list[T]`` (``Sequence``, ``tuple[T, ...]``) lists whose every element fits ``T``; ``dict``
    (``Mapping[K, V]``) mappings; ``Any`` and types vlmkit cannot check from YAML accept anything. An
    empty annotation (or papermill's ``"None"``, "unknown") checks against the type of ``default`` (a
    Python value), and accepts anything when ``default`` is None; ``NoneType`` is the type of None.
    """
    text = (type_str or "").strip()
    if not text or text == "None":  # papermill's "None": no annotation
        if default is None:
            return True
        text = type(default).__name__
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return True
    return _matches(value, node)


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _a(value: Any) -> str:
    """``a str``, ``an int``, ``None``."""
    name = _type_name(value)
    return name if value is None else ("an " if name[0] in "aeiouAEIOU" else "a ") + name


def _short(value: Any, limit: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _why(value: Any, type_str: str) -> str:
    """``'many' is a str`` / ``['a', 3] is a list whose item 3 is an int``."""
    base = f"{_short(value)} is {_a(value)}"
    if isinstance(value, (list, tuple)):
        for v in value:
            if not any(check_value(v, t) for t in _element_types(type_str)):
                return f"{base} whose item {_short(v, 30)} is {_a(v)}"
    return base


def _element_types(type_str: str) -> list[str]:
    """Element annotations of the list types in ``type_str`` (``list[str] | None`` -> ``["str"]``)."""
    found = re.findall(r"(?:list|List|Sequence|set|Set|tuple|Tuple)\[([^\[\]]+?)(?:,\s*\.\.\.)?\]", type_str or "")
    return found or ["Any"]


# ------------------------------------------------------------------------------------- notebooks

_CACHE: dict[tuple[str, int, int], dict[str, Param]] = {}


def _parameters_cell(path: Path) -> Any:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.get("cell_type") == "code" and "parameters" in (cell.get("metadata", {}).get("tags") or []):
            return cell
    return None


def _from_source(src: str) -> dict[str, Param]:
    """Top-level assignments of a parameters cell, read with ``ast`` (annotations as written)."""
    clean = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines())
    try:
        tree = ast.parse(clean)
    except SyntaxError:
        return {}
    comments: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(clean).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    out: dict[str, Param] = {}
    for stmt in tree.body:
        targets: list[ast.expr] = []
        annotation = value = None
        if isinstance(stmt, ast.AnnAssign):
            targets, annotation, value = [stmt.target], stmt.annotation, stmt.value
        elif isinstance(stmt, ast.Assign):
            targets, value = list(stmt.targets), stmt.value
        for t in targets:
            if isinstance(t, ast.Name):
                type_text = " ".join((ast.get_source_segment(clean, annotation) or "").split()) if annotation else ""
                default = (ast.get_source_segment(clean, value) or "") if value is not None else ""
                out[t.id] = Param(t.id, type_text.strip("\"'"), default.strip(),
                                  comments.get(stmt.end_lineno or stmt.lineno, ""))
    return out


def notebook_parameters(path: str | Path) -> dict[str, Param]:
    """The parameters a notebook declares in its ``parameters``-tagged cell, in cell order.

    Read with ``papermill.inspect_notebook`` (name, inferred type, default, help), completed and corrected
    from the cell's syntax: papermill's pattern skips annotations such as ``int | None`` and cuts a
    default at a ``#`` inside a string. A notebook without a parameters cell declares nothing.
    Results are cached per file version.

    Raises:
        DataNotFoundError: No such file.
        DataError: The file is not a readable notebook.
    """
    from vlmkit.errors import DataNotFoundError

    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise DataNotFoundError(f"notebook {str(p)!r} does not exist") from None
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key in _CACHE:
        return dict(_CACHE[key])
    try:
        cell = _parameters_cell(p)
    except Exception as e:
        raise DataError(f"notebook {str(p)!r} cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:200]})") \
            from None
    if cell is None:
        _CACHE[key] = {}
        return {}
    try:
        import papermill

        inspected = dict(papermill.inspect_notebook(str(p)))
    except Exception:  # e.g. no kernelspec in the metadata: papermill's translator on the cell itself
        try:
            from papermill.translators import PythonTranslator

            inspected = {q.name: q._asdict() for q in PythonTranslator.inspect(cell)}
        except Exception:
            inspected = {}
    parsed = _from_source(str(cell.get("source", "")))
    params: dict[str, Param] = {}
    for name, q in parsed.items():
        pm = inspected.get(name) or {}
        pm_type = str(pm.get("inferred_type_name") or "")
        params[name] = Param(name, q.type or ("" if pm_type in ("None", "") else pm_type), q.default or
                             str(pm.get("default", "")), q.help or str(pm.get("help", "")))
    for name, pm in inspected.items():  # what papermill sees and the parse does not (a cell with magics ...)
        if name not in params:
            t = str(pm.get("inferred_type_name") or "")
            params[name] = Param(name, "" if t == "None" else t, str(pm.get("default", "")), str(pm.get("help", "")))
    _CACHE[key] = params
    return dict(params)


def parameters_for(params: Mapping[str, Any], declared: Iterable[str]) -> dict[str, Any]:
    """The part of ``params`` a notebook declaring ``declared`` is passed (papermill warns of the rest)."""
    names = set(declared)
    return {k: v for k, v in params.items() if k in names}


def notebook_file(name: str, notebooks_dir: str | Path, source: str = "grid") -> Path:
    """The notebook ``name`` (with or without ``.ipynb``) of ``notebooks_dir``.

    Raises:
        DataError: No such notebook; the one-line message names ``source``, near matches and the available ones.
    """
    folder = Path(notebooks_dir)
    if not isinstance(name, str) or not name:
        raise DataError(f"{source}: notebooks: {name!r} is not a notebook name")
    p = folder / (name if name.endswith(".ipynb") else f"{name}.ipynb")
    if not p.is_file():
        known = sorted(q.stem for q in folder.glob("*.ipynb")) if folder.is_dir() else []
        raise DataError(f"{source}: notebooks: {name!r} is not in {str(folder)!r}.{did_you_mean(Path(name).stem, known)} "
                        f"Available: {', '.join(known) or '(none)'}")
    return p


# ------------------------------------------------------------------------------------ name checks


def _check_perturbation(name: str) -> str | None:
    from vlmkit import registry
    from vlmkit.errors import RegistryError

    resolve = getattr(registry, "resolve_perturbations", None)
    if resolve is not None:
        try:
            resolve([name], where="perturbations")
            return None
        except RegistryError as e:
            return re.sub(r"^perturbations: ", "", str(e))
    P = registry.PERTURBATIONS
    if P.list(name) or P.list(family=name):
        return None
    families = sorted({str(P.meta(k).get("family")) for k in P.list()})
    return (f"unknown perturbation {name!r}; expected a registered name, glob or family ({', '.join(families)})."
            + did_you_mean(name, [*P.list(), *families]))


def _check_attack(name: str) -> str | None:
    from vlmkit.registry import ATTACKS

    if name in ATTACKS:
        return None
    return f"unknown attack {name!r}; expected one of {', '.join(ATTACKS.list())}." + did_you_mean(name, ATTACKS.list())


def _check_text_perturbation(name: str) -> str | None:
    from vlmkit.registry import TEXT_PERTURBATIONS

    if TEXT_PERTURBATIONS.list(name):
        return None
    return (f"unknown text perturbation {name!r}; expected one of {', '.join(TEXT_PERTURBATIONS.list())}."
            + did_you_mean(name, TEXT_PERTURBATIONS.list()))


def transfer_sources(value: Any) -> list[str]:
    """The model specs a ``transfer`` parameter crafts on (ensembles ``a+b`` split)."""
    if not isinstance(value, Mapping):
        return []
    src = value.get("sources") or []
    src = [src] if isinstance(src, str) else src if isinstance(src, (list, tuple)) else []
    return [p.strip() for s in src for p in ([s] if isinstance(s, str) else s if isinstance(s, (list, tuple)) else [])
            for p in (p.split("+") if isinstance(p, str) else [])]


def _check_transfer(value: Any) -> str | None:
    if value in ({}, None):
        return None
    if not isinstance(value, Mapping) or "attack" not in value or not value.get("sources"):
        return (f"{value!r} is not a transfer spec; expected {{attack: NAME, sources: [SPEC or 'A+B', ...], "
                "<attack parameters>}} or {}")
    problem = _check_attack(str(value["attack"]))
    if problem:
        return problem
    if not transfer_sources(value) or not all(transfer_sources(value)):
        return f"sources {value['sources']!r} must be model specs (an ensemble as 'A+B' or a list)"
    return None


#: Parameters holding registered names: parameter -> check of one name (None when known, else the reason).
NAME_CHECKS: dict[str, Callable[[str], str | None]] = {
    "perturbations": _check_perturbation,
    "attacks": _check_attack,
    "text_perturbations": _check_text_perturbation,
}
#: Parameters whose whole value is checked: parameter -> check (None when fine, else the reason).
VALUE_CHECKS: dict[str, Callable[[Any], str | None]] = {"transfer": _check_transfer}


def is_model_parameter(key: str) -> bool:
    """Parameters holding model specs: ``models``, ``*_models`` and ``ms_reference``."""
    return key == "models" or key.endswith("_models") or key == "ms_reference"


# ------------------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class _Item:
    key: str
    value: Any
    where: str  # "" for the base parameters, else " (variants[1] 'toy')", " (axes)", " (-p/-y)"
    effective: bool  # some run gets this value (not shadowed by a later source)
    injected: bool = False  # added by the caller (--data), not written in the grid


def _items(spec: GridSpec, extra: Mapping[str, Any], overrides: Mapping[str, Any]) -> Iterator[_Item]:
    variants = spec.variants or []

    def in_all_variants(k: str) -> bool:
        return bool(variants) and all(k in v for v in variants)

    for k, v in spec.parameters.items():
        yield _Item(k, v, "", k not in overrides and k not in spec.axes and not in_all_variants(k))
    for k, v in extra.items():
        yield _Item(k, v, " (--data)" if k == "data_path" else " (extra)",
                    k not in overrides and k not in spec.axes and not in_all_variants(k), injected=True)
    for i, var in enumerate(variants):
        label = f" (variants[{i}]" + (f" {var['variant']!r})" if "variant" in var else ")")
        for k, v in var.items():
            yield _Item(k, v, label, k not in overrides and k not in spec.axes)
    for k, values in spec.axes.items():
        for v in values:
            yield _Item(k, v, " (axes)", k not in overrides)
    for k, v in overrides.items():
        yield _Item(k, v, " (-p/-y)", True)


def _label(spec_or_runs: GridSpec | Sequence[Run], source: str | Path | None) -> str:
    if source is not None:
        return f"grid file {str(source)!r}"
    if isinstance(spec_or_runs, GridSpec):
        return f"grid file {str(spec_or_runs.source)!r}" if spec_or_runs.source else f"grid {spec_or_runs.name!r}"
    names = {r.grid for r in spec_or_runs}
    return f"grid {', '.join(sorted(names))!r}"


def check_parameters(spec_or_runs: GridSpec | Sequence[Run], notebooks_dir: str | Path, *,
                     extra: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None,
                     source: str | Path | None = None) -> dict[str, dict[str, Param]]:
    """Refuse a grid whose parameters its notebooks do not declare or whose values have the wrong type.

    Every notebook of the grid must exist in ``notebooks_dir``. Every parameter of every run must be
    declared by at least one of the grid's notebooks (``out_dir``, injected by the runner, the naming
    key ``variant`` and the caller's ``extra`` are exempt), its value must fit the type of every
    notebook that declares it, and the names in the :data:`NAME_CHECKS` parameters must be registered.

    Args:
        spec_or_runs: A grid (its base ``parameters``, ``variants`` and ``axes`` are checked, each value
            named by where it came from) or expanded runs.
        notebooks_dir: Where the notebooks are.
        extra: Parameters the caller adds to every run (``data_path`` from ``--data``).
        overrides: Parameters that win over everything (``-p``/``-y`` on the command line).
        source: The grid file, for messages (default: the grid's own).

    Returns:
        Per notebook name, the parameters it declares.

    Raises:
        DataError: A notebook of the grid does not exist (or is not a readable notebook).
        InputError: An undeclared parameter, a value of the wrong type, or an unknown registered name; one
            line naming the grid file, the key, where it came from and what was expected.
    """
    label = _label(spec_or_runs, source)
    extra, overrides = dict(extra or {}), dict(overrides or {})
    if isinstance(spec_or_runs, GridSpec):
        notebooks = list(spec_or_runs.notebooks)
        items = list(_items(spec_or_runs, extra, overrides))
    else:
        notebooks = list(dict.fromkeys(nb for r in spec_or_runs for nb in r.notebooks))
        items = [_Item(k, v, f" (run {r.run_id!r})", True) for r in spec_or_runs for k, v in r.parameters.items()]
        items += [_Item(k, v, " (extra)", True, injected=True) for k, v in extra.items()]
        items += [_Item(k, v, " (-p/-y)", True) for k, v in overrides.items()]
    declared: dict[str, dict[str, Param]] = {}
    for nb in notebooks:
        path = notebook_file(nb, notebooks_dir, label)
        try:
            declared[nb] = notebook_parameters(path)
        except VLMKitError as e:
            raise DataError(f"{label}: notebooks: {e}") from None
    known = list(dict.fromkeys(n for ps in declared.values() for n in ps))
    for it in items:
        if not isinstance(it.key, str) or not it.key.isidentifier():
            raise InputError(f"{label}: parameter name {it.key!r}{it.where} is not a Python identifier")
        owners = [(nb, ps[it.key]) for nb, ps in declared.items() if it.key in ps]
        if not owners:
            if it.key in RUNNER_PARAMETERS or it.key in NAMING_KEYS or it.injected:
                continue
            raise InputError(f"{label}: {it.key}{it.where}: no notebook of the grid declares {it.key!r} "
                             f"({', '.join(notebooks)}).{did_you_mean(it.key, known)} "
                             f"Declared: {', '.join(sorted(known)) or '(none)'}")
        if not it.effective:
            continue
        for nb, param in owners:
            if not param.accepts(it.value):
                raise InputError(f"{label}: {it.key}{it.where}: {_why(it.value, param.expected)}; {nb} declares "
                                 f"{it.key}: {param.expected}")
        whole = VALUE_CHECKS.get(it.key)
        problem = whole(it.value) if whole is not None else None
        if problem:
            raise InputError(f"{label}: {it.key}{it.where}: {problem}")
        check = NAME_CHECKS.get(it.key)
        if check is not None:
            for name in ([it.value] if isinstance(it.value, str) else it.value if isinstance(it.value, list) else []):
                problem = check(name) if isinstance(name, str) else None
                if problem:
                    raise InputError(f"{label}: {it.key}{it.where}: {problem}")
    return declared


def check_run_datasets(runs: Iterable[Run], *, source: str | Path | None = None,
                       extra: Mapping[str, Any] | None = None) -> None:
    """Check each run's ``datasets`` (with ``--data``'s shared layout added) before anything runs: roles,
    formats, keys and paths (:func:`vlmkit.data.sources.with_shared_layout`).

    Raises:
        InputError, DataNotFoundError: One line naming the grid file, the run and the bad spec.
    """
    from vlmkit.data.sources import with_shared_layout

    runs = list(runs)
    label = _label(runs, source)
    for r in runs:
        params = {**r.parameters, **dict(extra or {})}
        if "datasets" not in r.parameters and not params.get("data_path"):
            continue
        try:
            with_shared_layout(r.parameters.get("datasets") or {}, params.get("data_path") or None)
        except VLMKitError as e:
            raise type(e)(f"{label}: run {r.run_id!r}: {e}") from None


def model_specs(runs: Iterable[Run], extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Every distinct model spec in the runs' model parameters (:func:`is_model_parameter`): spec -> key."""
    found: dict[str, str] = {}
    for params in [*(r.parameters for r in runs), dict(extra or {})]:
        for key, value in params.items():
            if key == "transfer":  # the models a transfer attack is crafted on
                for spec in transfer_sources(value):
                    found.setdefault(spec, key)
                continue
            if not is_model_parameter(key):
                continue
            for spec in ([value] if isinstance(value, str) else value if isinstance(value, (list, tuple)) else []):
                if isinstance(spec, str) and spec.strip() and spec not in found:
                    found[spec] = key
    return found


def check_models(runs: Iterable[Run], *, weights: bool = True, source: str | Path | None = None,
                 extra: Mapping[str, Any] | None = None) -> list[str]:
    """Resolve every model spec of ``runs`` before the first notebook starts; returns the specs checked.

    Args:
        runs: The runs about to execute.
        weights: Also require hub weights to be cached or the hub reachable (seconds at most); False
            only parses the specs.
        source: The grid file, for messages.
        extra: Parameters added to every run.

    Raises:
        ModelSpecError: A spec that does not parse or names an unknown architecture, tag or toy model.
        WeightsNotFoundError: Weights neither on disk, cached nor reachable.
    """
    from vlmkit.errors import ModelSpecError, WeightsNotFoundError
    from vlmkit.models.check import check_model_spec

    runs = list(runs)
    label = _label(runs, source) if source is not None or runs else "grid"
    specs = model_specs(runs, extra)
    for spec, key in specs.items():
        try:
            check_model_spec(spec, weights=weights)
        except (ModelSpecError, WeightsNotFoundError) as e:
            raise type(e)(f"{label}: {key}: {' '.join(str(e).split())}") from None
    return list(specs)


__all__ = ["NAME_CHECKS", "NAMING_KEYS", "RUNNER_PARAMETERS", "VALUE_CHECKS", "Param", "check_models", "check_parameters",
           "check_run_datasets",
           "check_value", "is_model_parameter", "model_specs", "notebook_file", "notebook_parameters",
           "parameters_for", "transfer_sources"]
