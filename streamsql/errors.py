"""Exceptions users see. Their messages follow ksqlDB's wording, because error messages are
part of the interface (QTT cases and clients compare them)."""
from __future__ import annotations


class StreamSqlError(Exception):
    """Base of all errors raised to users."""


class ParseError(StreamSqlError):
    """Bad SQL text. Carries the 1-based line and column of the offending token, the token
    itself and what the grammar expected there."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None,
                 token: str | None = None, expected: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.token = token
        self.expected = expected


class KsqlException(StreamSqlError):
    """A statement is invalid for a reason other than syntax (ksqlDB's KsqlException)."""


class KsqlStatementException(KsqlException):
    """A statement failed validation; ``statement`` is its text (ksqlDB's
    KsqlStatementException)."""

    def __init__(self, message: str, statement: str = "") -> None:
        super().__init__(message)
        self.statement = statement


class AssertionFailedException(KsqlStatementException):
    """An ASSERT TOPIC/SCHEMA that did not hold within its timeout; ``entity`` is the
    assertion's entity (ksqlDB answers it with HTTP 417)."""

    def __init__(self, message: str, entity: dict | None = None, statement: str = "") -> None:
        super().__init__(message, statement)
        self.entity = entity


class ServiceRestError(KsqlStatementException):
    """A statement a service behind the engine refused (a connector statement the Connect
    worker refused), with that service's HTTP ``status``: ksqlDB's KsqlRestException, which
    its server answers with that status and a ``generic_error`` body."""

    def __init__(self, status: int, message: str, statement: str = "") -> None:
        super().__init__(message, statement)
        self.status = status


class WriteFailedError(StreamSqlError):
    """The log did not take a write (a full disk, an I/O error): none of its records were
    written, so the client may retry. Servers answer it with a 5xx, not as a bad statement."""


class FunctionError(StreamSqlError):
    """A scalar function failed on a record: the record's column becomes NULL and the reason
    goes to the processing log."""


class QueryFailedError(StreamSqlError):
    """Processing a record failed in a way that stops the query, as Kafka Streams stops on a
    StreamsException (a UDAF's KsqlFunctionException, a timestamp that cannot be extracted
    with ``ksql.timestamp.throw.on.invalid``); the message follows Kafka Streams' wording."""
