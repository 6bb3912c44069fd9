"""Unknown query parameters are refused (422 naming each), not ignored.

An operator's typo (``?stauts=DEAD``, ``?typ=email.send``) would otherwise list every job, and
a retry script built on that listing would act on all of them.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from gateway.problems import invalid


def refuse_unknown_query(request: Request) -> None:
    """An app-wide dependency: the query may name only the matched route's parameters."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = set(_query_names(route.dependant))
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise invalid([(name or "(empty name)", "is not a parameter of this route")
                       for name in unknown])  # fmt: skip


def _query_names(dependant: Dependant) -> Iterator[str]:
    for field in dependant.query_params:
        yield field.alias
    for sub in dependant.dependencies:
        yield from _query_names(sub)
