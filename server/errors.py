"""ksqlDB's error bodies and codes, so clients that parse them keep working.

Two shapes, as ksqlDB sends them:

* ``{"@type": "generic_error", "error_code": 40000, "message": "..."}`` for requests that are
  wrong as HTTP (malformed JSON, missing fields, unknown endpoints, auth);
* ``{"@type": "statement_error", "error_code": 40001, "message": "...", "statementText": "...",
  "entities": [...]}`` for a statement that failed; ``entities`` holds what the statements
  before it in the same request returned (they stay applied).
"""
from __future__ import annotations

from typing import Any

# ksqlDB's io.confluent.ksql.rest.Errors codes.
BAD_REQUEST = 40000
BAD_STATEMENT = 40001
QUERY_ENDPOINT = 40002
UNAUTHORIZED = 40100
NOT_FOUND = 40400
METHOD_NOT_ALLOWED = 40500
PAYLOAD_TOO_LARGE = 41300
ASSERTION_FAILED = 41700
SERVER_ERROR = 50000


class HttpError(Exception):
    """A request answered with an error body; ``body`` is the JSON sent."""

    def __init__(self, status: int, body: dict[str, Any], headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body
        self.headers = headers


def generic_error(error_code: int, message: str) -> dict[str, Any]:
    """ksqlDB's ``KsqlErrorMessage``."""
    return {"@type": "generic_error", "error_code": error_code, "message": message}


def statement_error(message: str, statement_text: str, entities: list[dict[str, Any]] | None = None,
                    error_code: int = BAD_STATEMENT) -> dict[str, Any]:
    """ksqlDB's ``KsqlStatementErrorMessage``."""
    return {"@type": "statement_error", "error_code": error_code, "message": message,
            "statementText": statement_text, "entities": entities or []}


def bad_request(message: str) -> HttpError:
    return HttpError(400, generic_error(BAD_REQUEST, message))


def bad_statement(message: str, statement_text: str, entities: list[dict[str, Any]] | None = None,
                  error_code: int = BAD_STATEMENT) -> HttpError:
    return HttpError(400, statement_error(message, statement_text, entities, error_code))


def not_found(message: str) -> HttpError:
    return HttpError(404, generic_error(NOT_FOUND, message))


def too_large(limit: int) -> HttpError:
    return HttpError(413, generic_error(PAYLOAD_TOO_LARGE,
                                        f"Request body is larger than the server's limit of {limit} bytes"))


def unauthorized() -> HttpError:
    return HttpError(401, generic_error(UNAUTHORIZED, "Unauthorized"),
                     ((b"www-authenticate", b'Basic realm="KsqlServer"'),))

