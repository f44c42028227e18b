"""The bodies of error answers, as OpenAPI documents them (every error has a ``detail``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """An error answer: what went wrong and, where there is one, what to do."""

    detail: str


class ValidationErrorItem(BaseModel):
    """One invalid part of a request (never its value)."""

    loc: list[str | int] = Field(description="where: body/query/path and the field's path")
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """A 422: the request's fields that failed validation (at most 20), or one sentence when
    the fields are well-formed but unusable together (e.g. not the model's lookback)."""

    detail: list[ValidationErrorItem] | str
