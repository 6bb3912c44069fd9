"""The example's own HTTP endpoint: ``POST /reservations`` holds seats and schedules the expiry
in one transaction. It is the application's API, beside (not part of) the outbox gateway."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import Response

from examples.reservations.domain import SeatTaken, hold_seats


class HoldRequest(BaseModel):
    event_id: str = Field(min_length=1, max_length=100, pattern=r"^[\w.:-]+$")
    seat_ids: list[str] = Field(min_length=1, max_length=20)
    hold_seconds: int = Field(600, ge=1, le=86_400)


class HoldResponse(BaseModel):
    reservation_id: str
    expires_at: datetime
    expiry_job_id: str


def reservations_app(engine: Engine) -> FastAPI:
    app = FastAPI(title="reservations example")

    @app.post("/reservations", status_code=201)
    def hold(body: HoldRequest) -> HoldResponse:
        # engine.begin(): commit when the block ends, roll back on any exception in it.
        with engine.begin() as conn:
            held = hold_seats(
                conn,
                event_id=body.event_id,
                seat_ids=body.seat_ids,
                hold_for=timedelta(seconds=body.hold_seconds),
            )
        return HoldResponse(
            reservation_id=held.reservation_id,
            expires_at=held.expires_at,
            expiry_job_id=held.expiry_job_id,
        )

    async def seat_taken(request: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    app.add_exception_handler(SeatTaken, seat_taken)
    return app
