"""Session variables (DEFINE name = 'value'): ``${name}`` in a statement's text is replaced by
the value before parsing, as ksqlDB does; ``$${name}`` is the escape for a literal ``${name}``.
Names not defined stay as written."""
from __future__ import annotations

import re
from typing import Mapping

_VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """``text`` with its variable references replaced (see the module docstring)."""
    if "${" not in text:
        return text

    def replace(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(0)[1:]  # $${name}: the escape, written as ${name}
        return variables.get(m.group(2), m.group(0))

    return _VARIABLE.sub(replace, text)
