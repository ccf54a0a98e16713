"""Generated projections shared by the aggregate and join stages: a filter (HAVING/WHERE), then
one local per output column, each computed under its own try (a failure makes that column NULL
and is logged), then the (key tuple, value tuple) return."""
from __future__ import annotations

from typing import Any, Sequence

from streamsql.codegen import ExpressionCompiler


def filter_lines(comp: ExpressionCompiler, condition: Any, clause: str, indent: str = "    ") -> list[str]:
    """Source lines returning None unless ``condition`` is TRUE (a failure counts as not TRUE)."""
    cond = comp.compile_predicate(condition, clause).src
    return [f"{indent}try:",
            f"{indent}    _keep = {cond}",
            f"{indent}except Exception:",
            f"{indent}    _keep = None",
            f"{indent}if _keep is not True:",
            f"{indent}    _errs.clear()",
            f"{indent}    return None"]


def projection_lines(comp: ExpressionCompiler, columns: Sequence[Any], n_key: int,
                     indent: str = "    ") -> list[str]:
    """Source lines computing ``columns`` (OutputColumns) and returning (key, value) tuples;
    expects ``_plog`` and ``_topic`` in the generated function's globals."""
    lines: list[str] = []
    names = []
    for j, oc in enumerate(columns):
        var = f"_o{j}"
        names.append(var)
        lines.append(f"{indent}try:")
        lines.append(f"{indent}    {var} = {comp.compile(oc.expression).src}")
        lines.append(f"{indent}except Exception as _exc:")
        lines.append(f"{indent}    {var} = None")
        lines.append(f"{indent}    _plog(_topic, 0, 0, {'Error computing ' + oc.name + ': '!r} + repr(_exc))")
    # Functions that failed returned NULL; log why.
    lines.append(f"{indent}if _errs:")
    lines.append(f"{indent}    for _what, _exc in _errs:")
    lines.append(f"{indent}        _plog(_topic, 0, 0, 'Error in ' + _what + ': ' + repr(_exc))")
    lines.append(f"{indent}    _errs.clear()")
    lines.append(f"{indent}return ({''.join(f'{n}, ' for n in names[:n_key])}), "
                 f"({''.join(f'{n}, ' for n in names[n_key:])})")
    return lines
