"""Caps at every scope (pure): the `delegation.budget` settings, the scopes a task's reservation is held
in, the calendar keys of a day and a month, what a settled task is charged, and price-override checks.

    delegation:
      budget:
        per_call_usd: 0.50        # one call (today's `budget_usd`, still accepted)
        per_session_usd: 5        # a CLI run, an MCP session, a hermes session and its whole delegation tree
        daily_usd: 20             # calendar day in `timezone` (the machine's local zone unless set)
        monthly_usd: 200
        timezone: UTC             # or an IANA name (Europe/Paris); default: local time
        on_over_budget: refuse    # or downgrade (move down delegation.tiers to a model that fits)
        lease_s: 120              # a dead process's holds are released after this long

The stores (SQLite, Redis) that hold the scopes' spent and reserved amounts live in `hermes_delegate.spend`;
this module decides, they do I/O.
"""

from __future__ import annotations

import functools

import math
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone, tzinfo
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["BudgetSettings", "Scope", "scopes_for", "period_keys", "settle_amount", "price_override_problems",
           "PRICE_KEY_SUFFIXES", "zone"]

#: litellm_params / model_info keys that override a price: every one must be a finite number ≥ 0.
PRICE_KEY_SUFFIXES = ("_cost_per_token", "_cost_per_second", "_cost_per_character", "_cost_per_image",
                      "_cost_per_request", "_cost_per_query", "_cost_per_pixel")


class BudgetSettings(BaseModel):
    """`delegation.budget`: caps at every scope. A call may lower them (budget_usd), never raise them."""

    model_config = ConfigDict(extra="forbid")
    per_call_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    per_session_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    daily_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    monthly_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    timezone: str | None = Field(default=None,
                                 description="calendar of daily/monthly: None = local, 'UTC', or an IANA name")
    on_over_budget: Literal["refuse", "downgrade"] = "refuse"
    namespace: str = Field(default="default", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$",
                           description="separates teams sharing one Redis (keys hermes_delegate:spend:<ns>:)")
    lease_s: float = Field(default=120.0, gt=0, le=86_400, allow_inf_nan=False,
                           description="a hold whose process stopped renewing it is released after this long")

    @field_validator("per_call_usd", "per_session_usd", "daily_usd", "monthly_usd", mode="before")
    @classmethod
    def _not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError(f"must be a number of US dollars, not {str(v).lower()}")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is not None:
            zone(v)
        return v

    @property
    def shared(self) -> bool:
        """Whether any cap beyond one call is set (those need the store)."""
        return any(x is not None for x in (self.per_session_usd, self.daily_usd, self.monthly_usd))


def zone(name: str | None) -> tzinfo | None:
    """The tzinfo of a configured zone name (None: the machine's local zone)."""
    if name is None or name.strip().lower() == "local":
        return None
    if name.strip().upper() == "UTC":
        return dt_timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415

    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use UTC, local, or an IANA name like Europe/Paris") from None


def period_keys(now: float, tz_name: str | None) -> tuple[str, str]:
    """("day:2026-12-07", "month:2026-12") of a unix time in the configured calendar (asked for every
    settled task: worked out once a minute, since days and months begin on whole minutes in every
    zone's current offsets)."""
    return _period_keys(int(now // 60), tz_name)


@functools.lru_cache(maxsize=16)
def _period_keys(minute: int, tz_name: str | None) -> tuple[str, str]:
    tz = zone(tz_name)
    t = datetime.fromtimestamp(minute * 60, tz) if tz is not None else datetime.fromtimestamp(minute * 60)
    return f"day:{t:%Y-%m-%d}", f"month:{t:%Y-%m}"


@dataclass(frozen=True)
class Scope:
    """One cap a reservation is held under: its store key, its cap, and how to name it to a user."""

    key: str
    cap_usd: float
    label: str  # "daily cap", "session cap", …


def scopes_for(settings: BudgetSettings, *, now: float, session: str | None,
               session_cap: float | None = None) -> list[Scope]:
    """The store scopes a task is held under right now (the call's own cap is the batch's, in memory)."""
    out: list[Scope] = []
    cap = session_cap if session_cap is not None else settings.per_session_usd
    if cap is not None and session:
        out.append(Scope(f"session:{session}", cap, "session cap"))
    if settings.daily_usd is None and settings.monthly_usd is None:
        return out  # the calendar is not needed (asked for every task)
    day, month = period_keys(now, settings.timezone)
    if settings.daily_usd is not None:
        out.append(Scope(day, settings.daily_usd, f"daily cap ({day[4:]})"))
    if settings.monthly_usd is not None:
        out.append(Scope(month, settings.monthly_usd, f"monthly cap ({month[6:]})"))
    return out


@dataclass
class Charge:
    """What a settled task costs its scopes: `usd` is counted against the caps; `cost_usd` is what is
    reported (None: unknown); `estimated` when a paid attempt's cost was unknown and the reservation
    stood in for it; `paid` when any attempt was answered (and so billed)."""

    usd: float
    cost_usd: float | None
    estimated: bool = False
    paid: bool = False


def settle_amount(*, status: str, cost_usd: float | None, attempts: list[Any], reserved: float,
                  sent: bool) -> Charge:
    """What a finished task is charged, whatever its status. Every paid attempt (one the provider answered:
    `Attempt.paid`) at its cost; where a paid attempt's cost is unknown (no usage, an unpriced model), the
    reservation stands in (estimated) and the reported cost is None. A task cut short (timeout, interrupt)
    after a request went out may have been billed: the reservation, estimated. Nothing sent: 0."""
    costs: list[float] = []
    unknown = paid = False
    for a in attempts:  # one pass, no generators: this runs for every task
        if getattr(a, "paid", False):
            paid = True
            if a.cost_usd is None:
                unknown = True
            else:
                costs.append(a.cost_usd)
    known = sum(costs)  # sum(), as before: on 3.12+ it compensates rounding, a loop of += would not
    if status == "completed":
        if cost_usd is None or unknown:
            return Charge(max(known, reserved), None, estimated=True, paid=paid)
        usd = max(cost_usd, known)
        return Charge(usd, usd, paid=paid)
    if unknown:
        return Charge(max(known, reserved), None, estimated=True, paid=paid)
    if status in ("timeout", "interrupted") and sent:
        return Charge(max(known, reserved), known if paid else None, estimated=True, paid=paid)
    return Charge(known, known if paid else None, paid=paid)


def price_override_problems(params: Mapping[str, Any], where: str) -> list[str]:
    """Each price override under `where` that is not a finite number ≥ 0, named by its key."""
    problems = []
    for key, value in params.items():
        if not (isinstance(key, str) and key.endswith(PRICE_KEY_SUFFIXES)) or value is None:
            continue
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or not math.isfinite(number) or number < 0:
            problems.append(f"{where}.{key} must be a finite number ≥ 0 (US dollars), got {value!r}")
    return problems
