"""Dates of history items (`meta["date"]`), parsed once for every recency-based component.

Accepted: YYYY, YYYY-MM, YYYY-MM-DD with or without zero padding (`2019-3-5`), optionally a
time (`2019-03-05T14:30`, `2019-03-05 14:30:15.5`) and a UTC offset (`Z`, `+02:00`; converted
to UTC), or a `datetime.date` / `datetime.datetime`, or an int year. Missing or empty means
undated. Anything else (`03/05/2021`: month or day first?) is an `InputError` naming where it
came from, never a silent guess: dates compared as text put `2019-3-5` after `2019-10-01`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from personarag.errors import InputError
from personarag.types import Document

_DATE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{1,2})(?:-(?P<day>\d{1,2})"
    r"(?:[T ](?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,6}))?)?"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?)?)?)?"
)
FORMS = "YYYY, YYYY-MM, YYYY-MM-DD (zero padding optional), optionally with a time THH:MM[:SS] and a UTC offset"


def parse_date(value: object, where: str = "") -> dt.datetime | None:
    """The moment `value` names (naive, UTC for values with an offset; a date is its
    midnight, a month its first day); None for None or an empty string. `where` (e.g.
    "query 'q1', user 'u7', item 'i3'") starts the error message of an unreadable date."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dt.datetime):
        return _naive_utc(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 9999:
        return dt.datetime(value, 1, 1)
    match = _DATE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is not None:
        parts = match.groupdict()
        fraction = (parts["fraction"] or "").ljust(6, "0")
        try:
            moment = dt.datetime(
                int(parts["year"]), int(parts["month"] or 1), int(parts["day"] or 1),
                int(parts["hour"] or 0), int(parts["minute"] or 0), int(parts["second"] or 0), int(fraction or 0),
            )
        except ValueError as error:  # month 13, February 30, hour 25
            raise InputError(f"{where + ': ' if where else ''}date {value!r} is not a valid date ({error})") from None
        zone = parts["zone"]
        if zone:
            offset = dt.timezone.utc if zone == "Z" else _offset(zone)
            moment = _naive_utc(moment.replace(tzinfo=offset))
        return moment
    raise InputError(f"{where + ': ' if where else ''}date {value!r} is not a date; expected {FORMS}")


def _offset(zone: str) -> dt.timezone:
    digits = zone[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:])
    return dt.timezone((-1 if zone[0] == "-" else 1) * dt.timedelta(minutes=minutes))


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is None else moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def item_dates(history: Sequence[Document], where: str = "") -> list[dt.datetime | None]:
    """`parse_date` of each item's `meta["date"]`; errors name `where` and the item id."""
    prefix = f"{where}, " if where else ""
    return [parse_date(d.meta.get("date"), f"{prefix}item {d.id!r}") for d in history]


def sort_dates(history: Sequence[Document], where: str = "") -> list[int]:
    """Indices of `history`, newest date first; equal dates keep history order; undated
    items last, in history order."""
    dates = item_dates(history, where)
    dated = sorted((i for i, when in enumerate(dates) if when is not None), key=dates.__getitem__, reverse=True)
    return dated + [i for i, when in enumerate(dates) if when is None]
