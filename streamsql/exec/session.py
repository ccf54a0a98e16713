"""Session statements: SET/UNSET a property and DEFINE/UNDEFINE a variable for one client
(``streamsql.engine.Session``), and RUN SCRIPT, which the shell runs itself (it reads a file
on the client's side): the engine refuses it with the syntax error ksqlDB's server gives.

These change nothing shared and none goes to the command log; a command replayed from the
log runs with its recorded properties in a fresh session.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamsql import ast
from streamsql.errors import KsqlStatementException
from streamsql.results import Result

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.engine import Engine, Session


async def set_property(engine: Engine, stmt: ast.SetProperty, props: dict[str, Any],
                       session: Session, seq: int | None) -> Result:
    session.properties[stmt.name] = stmt.value
    return Result(stmt.text, "currentStatus", f"Successfully changed local property '{stmt.name}' to '{stmt.value}'.")


async def unset_property(engine: Engine, stmt: ast.UnsetProperty, props: dict[str, Any],
                         session: Session, seq: int | None) -> Result:
    session.properties.pop(stmt.name, None)
    return Result(stmt.text, "currentStatus", f"Successfully unset local property '{stmt.name}'.")


async def define_variable(engine: Engine, stmt: ast.DefineVariable, props: dict[str, Any],
                          session: Session, seq: int | None) -> Result:
    session.variables[stmt.name] = stmt.value
    return Result(stmt.text, "currentStatus", None)


async def undefine_variable(engine: Engine, stmt: ast.UndefineVariable, props: dict[str, Any],
                            session: Session, seq: int | None) -> Result:
    session.variables.pop(stmt.name, None)
    return Result(stmt.text, "currentStatus", None)


async def run_script(engine: Engine, stmt: ast.RunScript, props: dict[str, Any],
                     session: Session, seq: int | None) -> Result:
    raise KsqlStatementException("line 1:1: Syntax Error\nUnknown statement 'RUN'")

