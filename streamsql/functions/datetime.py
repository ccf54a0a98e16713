"""Date and time functions (ksqlDB's datetime UDFs) and the Java date-time pattern translator
they share.

ksqlDB formats and parses with ``java.time.format.DateTimeFormatter`` patterns
(``yyyy-MM-dd'T'HH:mm:ss.SSSX``). ``compile_pattern`` turns such a pattern, once, into a
``DateTimePattern`` that formats DATE / TIME / zoned TIMESTAMP values and parses text into
fields, which are then resolved the way java.time's SMART resolver does (day-of-month clamped
to the month's end, 12-hour clock plus AM/PM, conflicting fields rejected). Compiled patterns
and time zones are memoized by their string, so a pattern that arrives per record as a column
value is still parsed only once.

``parse_timestamp`` is ksqlDB's StringToTimestampParser (missing fields default to
1970-01-01T00:00 in the given zone); the WITH (TIMESTAMP_FORMAT=...) extractor can use it too.

Zones follow ``java.time.ZoneId.of``: region ids via zoneinfo (tzdata), ``Z``, ``+08:00``-style
offsets, ``UTC``/``GMT``/``UT`` and ``UTC+8``-style prefixed offsets. A two-argument
TIMESTAMPTOSTRING / STRINGTOTIMESTAMP uses ksqlDB's JVM default zone, which is UTC here.
"""
from __future__ import annotations

import re
import time as _time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Any, Callable
from zoneinfo import ZoneInfo

from streamsql.errors import FunctionError
from streamsql.functions.registry import udf
from streamsql.functions.safe_regex import SafePattern

# ===================================================================================== zones
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)
MS_PER_DAY = 86_400_000
NS_PER_DAY = 86_400_000_000_000


@dataclass(frozen=True)
class Zone:
    """A java.time ZoneId: its normalized id and the tzinfo that implements its rules."""

    id: str
    tz: tzinfo


_REGION_ID = re.compile(r"[A-Za-z][A-Za-z0-9~/._+-]+")
_OFFSET_FORMS = (
    re.compile(r"([+-])(\d{1,2})"),
    re.compile(r"([+-])(\d{2}):(\d{2})(?::(\d{2}))?"),
    re.compile(r"([+-])(\d{2})(\d{2})(\d{2})?"),
)


def _offset_seconds(text: str) -> int:
    """ZoneOffset.of: ``+h``, ``+hh``, ``+hh:mm``, ``+hhmm``, ``+hh:mm:ss``, ``+hhmmss``."""
    for form in _OFFSET_FORMS:
        m = form.fullmatch(text)
        if m:
            sign, h, mi, s = (m.groups() + (None, None))[:4]
            hours, minutes, seconds = int(h), int(mi or 0), int(s or 0)
            if hours > 18 or minutes > 59 or seconds > 59 or (hours == 18 and (minutes or seconds)):
                raise FunctionError(f"Zone offset not in valid range: {text}")
            total = hours * 3600 + minutes * 60 + seconds
            return -total if sign == "-" else total
    raise FunctionError(f"Invalid ID for ZoneOffset, invalid format: {text}")


def offset_id(total: int) -> str:
    """ZoneOffset.getId(): ``Z``, ``+05:30``, ``-07:00:15``."""
    if total == 0:
        return "Z"
    sign = "-" if total < 0 else "+"
    a = abs(total)
    h, rem = divmod(a, 3600)
    mi, s = divmod(rem, 60)
    return f"{sign}{h:02d}:{mi:02d}" + (f":{s:02d}" if s else "")


def _fixed(zone_id: str, seconds: int) -> Zone:
    return Zone(zone_id, timezone(timedelta(seconds=seconds), zone_id))


@lru_cache(maxsize=1024)
def _zone_or_error(zone_id: str) -> Zone | Exception:
    try:
        if zone_id == "Z" or zone_id[:1] in ("+", "-"):
            off = _offset_seconds(zone_id) if zone_id != "Z" else 0
            return _fixed(offset_id(off), off)
        if zone_id in ("UTC", "GMT", "UT"):
            return _fixed(zone_id, 0)
        for prefix in ("UTC", "GMT", "UT"):
            if zone_id.startswith(prefix) and zone_id[len(prefix):len(prefix) + 1] in ("+", "-"):
                off = _offset_seconds(zone_id[len(prefix):])
                return _fixed(prefix + (offset_id(off) if off else ""), off)
        if not _REGION_ID.fullmatch(zone_id):
            return FunctionError(f"Invalid ID for region-based ZoneId, invalid format: {zone_id}")
        try:
            return Zone(zone_id, ZoneInfo(zone_id))
        except Exception:  # zoneinfo raises several kinds for unknown or malformed keys
            return FunctionError(f"Unknown time-zone ID: {zone_id}")
    except FunctionError as exc:
        return exc


def zone_of(zone_id: str) -> Zone:
    """``ZoneId.of(zone_id)`` (memoized); raises FunctionError for an unknown or bad id."""
    got = _zone_or_error(zone_id)
    if isinstance(got, Exception):
        raise got
    return got


UTC = _fixed("UTC", 0)
GMT = _fixed("GMT", 0)

# Zone names java.time's zone-text parser ('z') maps to a region for an en_US locale.
_ZONE_ABBREVIATIONS = {
    "PST": "America/Los_Angeles", "PDT": "America/Los_Angeles", "PT": "America/Los_Angeles",
    "MST": "America/Denver", "MDT": "America/Denver", "MT": "America/Denver",
    "CST": "America/Chicago", "CDT": "America/Chicago", "CT": "America/Chicago",
    "EST": "America/New_York", "EDT": "America/New_York", "ET": "America/New_York",
    "AKST": "America/Anchorage", "AKDT": "America/Anchorage", "HST": "Pacific/Honolulu",
    "BST": "Europe/London", "CET": "Europe/Paris", "CEST": "Europe/Paris",
    "EET": "Europe/Bucharest", "EEST": "Europe/Bucharest", "WET": "Europe/Lisbon",
    "WEST": "Europe/Lisbon", "IST": "Asia/Kolkata", "JST": "Asia/Tokyo",
}
_ZONE_FULL_NAMES = {"UTC": "Coordinated Universal Time", "GMT": "Greenwich Mean Time",
                    "Z": "Z"}


def _zone_from_text(text: str) -> Zone:
    region = _ZONE_ABBREVIATIONS.get(text.upper())
    return zone_of(region if region else text)


def epoch_ms_of_local(epoch_day: int, ms_of_day: int, zone: Zone) -> int:
    """Epoch millis of a local date-time in ``zone``; a time in a DST gap moves forward by the
    gap and an ambiguous one takes the earlier offset, as ZonedDateTime.of does."""
    local = epoch_day * MS_PER_DAY + ms_of_day
    tz = zone.tz
    if isinstance(tz, timezone):
        off = tz.utcoffset(None)
    else:
        naive = datetime.fromordinal(epoch_day + _EPOCH_ORDINAL) + timedelta(milliseconds=ms_of_day)
        off = tz.utcoffset(naive)  # fold=0: earlier offset in overlaps, pre-gap offset in gaps
    assert off is not None
    return local - (off.days * 86400 + off.seconds) * 1000


def _zoned(epoch_ms: int, zone: Zone) -> datetime:
    return (_EPOCH_UTC + timedelta(milliseconds=epoch_ms)).astimezone(zone.tz)


# ============================================================================ pattern fields
# Field names (java.time ChronoField) used by the parser and in messages.
ERA, YEAR_OF_ERA, YEAR, MONTH, DAY, DOY, DOW, QUARTER = (
    "Era", "YearOfEra", "Year", "MonthOfYear", "DayOfMonth", "DayOfYear", "DayOfWeek",
    "QuarterOfYear")
AMPM, HOUR_OF_AMPM, CLOCK_HOUR_OF_AMPM, HOUR, CLOCK_HOUR, MINUTE, SECOND, NANO = (
    "AmPmOfDay", "HourOfAmPm", "ClockHourOfAmPm", "HourOfDay", "ClockHourOfDay",
    "MinuteOfHour", "SecondOfMinute", "NanoOfSecond")
MILLI_OF_DAY, NANO_OF_DAY, OFFSET, ZONE = "MilliOfDay", "NanoOfDay", "OffsetSeconds", "ZoneId"
_DATE_FIELDS = frozenset({ERA, YEAR_OF_ERA, YEAR, MONTH, DAY, DOY, DOW, QUARTER})
_TIME_FIELDS = frozenset({AMPM, HOUR_OF_AMPM, CLOCK_HOUR_OF_AMPM, HOUR, CLOCK_HOUR, MINUTE,
                          SECOND, NANO, MILLI_OF_DAY, NANO_OF_DAY})
_RANGES = {
    YEAR_OF_ERA: (1, 999_999_999), YEAR: (-999_999_999, 999_999_999), ERA: (0, 1),
    MONTH: (1, 12), DAY: (1, 31), DOY: (1, 366), DOW: (1, 7), QUARTER: (1, 4), AMPM: (0, 1),
    HOUR_OF_AMPM: (0, 11), CLOCK_HOUR_OF_AMPM: (1, 12), HOUR: (0, 23), CLOCK_HOUR: (1, 24),
    MINUTE: (0, 59), SECOND: (0, 59), NANO: (0, 999_999_999),
    MILLI_OF_DAY: (0, MS_PER_DAY - 1), NANO_OF_DAY: (0, NS_PER_DAY - 1),
}

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_QUARTERS = ("1st quarter", "2nd quarter", "3rd quarter", "4th quarter")
_TEXT = {  # (field, style) -> names by value; styles: 3 short, 4 full, 5 narrow
    (MONTH, 3): {m[:3]: i + 1 for i, m in enumerate(_MONTHS)},
    (MONTH, 4): {m: i + 1 for i, m in enumerate(_MONTHS)},
    (MONTH, 5): {m[0]: i + 1 for i, m in enumerate(_MONTHS)},
    (DOW, 3): {d[:3]: i + 1 for i, d in enumerate(_DAYS)},
    (DOW, 4): {d: i + 1 for i, d in enumerate(_DAYS)},
    (DOW, 5): {d[0]: i + 1 for i, d in enumerate(_DAYS)},
    (QUARTER, 3): {f"Q{i}": i for i in range(1, 5)},
    (QUARTER, 4): {q: i + 1 for i, q in enumerate(_QUARTERS)},
    (QUARTER, 5): {str(i): i for i in range(1, 5)},
    (ERA, 3): {"BC": 0, "AD": 1},
    (ERA, 4): {"Before Christ": 0, "Anno Domini": 1},
    (ERA, 5): {"B": 0, "A": 1},
    (AMPM, 3): {"AM": 0, "PM": 1},
}
_TEXT_BY_VALUE = {key: {v: k for k, v in names.items()} for key, names in _TEXT.items()}

# The kinds of value a pattern formats, and what each provides.
_CAPS = {"date": frozenset({"date"}), "time": frozenset({"time"}),
         "zoned": frozenset({"date", "time", "offset", "zone"})}

Emitter = Callable[[Any, Zone | None], str]


def _fmt_num(value: int, min_width: int, max_width: int, style: str, field: str) -> str:
    """NumberPrinterParser.format: pad to ``min_width``; ``style`` NORMAL, NOT_NEGATIVE or
    EXCEEDS_PAD (a '+' once the value is wider than the pad)."""
    digits = str(abs(value))
    if len(digits) > max_width:
        raise FunctionError(f"Field {field} cannot be printed as the value {value} exceeds "
                            f"the maximum print width of {max_width}")
    digits = digits.zfill(min_width)
    if value < 0:
        if style == "NOT_NEGATIVE":
            raise FunctionError(f"Field {field} cannot be printed as the value {value} "
                                f"cannot be negative according to the SignStyle")
        return "-" + digits
    if style == "EXCEEDS_PAD" and min_width < 19 and value >= 10 ** min_width:
        return "+" + digits
    return digits


def _day_of_year(d: date) -> int:
    return d.toordinal() - date(d.year, 1, 1).toordinal() + 1


def _us_dow(d: date) -> int:
    """Localized day-of-week for en_US (Sunday = 1)."""
    return d.isoweekday() % 7 + 1


def _week_offset(day: int, dow: int) -> int:
    # WeekFields(SUNDAY, minimalDays=1).startOfWeekOffset
    week_start = (day - dow) % 7
    return 7 - week_start if week_start + 1 > 1 else -week_start


def _compute_week(offset: int, day: int) -> int:
    return (7 + offset + (day - 1)) // 7


def _week_of_month(d: date) -> int:
    return _compute_week(_week_offset(d.day, _us_dow(d)), d.day)


def _year_len(year: int) -> int:
    return 366 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 365


def _week_based_year(d: date) -> int:
    doy = _day_of_year(d)
    offset = _week_offset(doy, _us_dow(d))
    week = _compute_week(offset, doy)
    if week == 0:
        return d.year - 1
    if week >= _compute_week(offset, _year_len(d.year) + 1):
        return d.year + 1
    return d.year


def _week_of_week_based_year(d: date) -> int:
    doy = _day_of_year(d)
    offset = _week_offset(doy, _us_dow(d))
    week = _compute_week(offset, doy)
    if week == 0:
        return _week_of_week_based_year(d - timedelta(days=doy))
    if week > 50:
        new_year_week = _compute_week(offset, _year_len(d.year) + 1)
        if week >= new_year_week:
            week = week - new_year_week + 1
    return week


def _offset_total(dt: datetime) -> int:
    off = dt.utcoffset()
    assert off is not None
    return off.days * 86400 + off.seconds


def _offset_formatter(shape: str, zero_text: str) -> Callable[[int], str]:
    """OffsetIdPrinterParser.format for a shape such as ``+HH:MM:ss``: upper-case parts are
    always printed, lower-case ones only when non-zero."""
    colon = ":" if ":" in shape else ""
    body = shape[3:].replace(":", "")
    minute = body[:2]  # '', 'mm' or 'MM'
    second = body[2:4]

    def fmt(total: int) -> str:
        if total == 0:
            return zero_text
        sign = "-" if total < 0 else "+"
        h, rem = divmod(abs(total), 3600)
        mi, s = divmod(rem, 60)
        out = f"{sign}{h:02d}"
        if minute == "MM" or (minute == "mm" and (mi or (second and s))):
            out += f"{colon}{mi:02d}"
            if second == "SS" or (second == "ss" and s):
                out += f"{colon}{s:02d}"
        return out

    return fmt


def _offset_regex(shape: str, zero_text: str) -> str:
    colon = ":" if ":" in shape else ""
    body = shape[3:].replace(":", "")
    minute, second = body[:2], body[2:4]
    rx = r"[+-]\d{2}"
    if minute:
        part = colon + r"\d{2}"
        if second:
            spart = colon + r"\d{2}"
            part += spart if second == "SS" else f"(?:{spart})?"
        rx += part if minute == "MM" else f"(?:{part})?"
    return f"{re.escape(zero_text)}|{rx}" if zero_text else rx


def _parse_offset_text(text: str) -> int:
    """Seconds of an offset as printed by any offset pattern (``Z``, ``+0530``, ``GMT+8``)."""
    if text.upper().startswith("GMT"):
        text = text[3:]
    if text in ("", "Z", "z"):
        return 0
    sign = -1 if text[0] == "-" else 1
    parts = text[1:].split(":")
    if len(parts) == 1:
        d = parts[0]
        h, mi, s = int(d[:2] if len(d) > 2 else d), int(d[2:4] or 0), int(d[4:6] or 0)
    else:
        h, mi, s = int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) > 2 else 0
    if h > 18 or mi > 59 or s > 59:
        raise FunctionError(f"Invalid offset: {text}")
    return sign * (h * 3600 + mi * 60 + s)


def _localized_offset(total: int, full: bool) -> str:
    if total == 0:
        return "GMT"
    sign = "-" if total < 0 else "+"
    h, rem = divmod(abs(total), 3600)
    mi, s = divmod(rem, 60)
    if full:
        return f"GMT{sign}{h:02d}:{mi:02d}" + (f":{s:02d}" if s else "")
    return f"GMT{sign}{h}" + (f":{mi:02d}" if mi or s else "") + (f":{s:02d}" if s else "")


@dataclass(frozen=True)
class _Field:
    """One pattern letter run: how to print it and how to parse it."""

    letter: str
    count: int
    needs: str  # 'date', 'time', 'offset' or 'zone'
    emit: Emitter
    regex: str | None  # None: this field cannot be parsed
    store: Callable[[str], tuple[str, Any]] | None = None


def _numeric(letter: str, count: int, needs: str, field: str, get: Callable[[Any], int],
             min_w: int, max_w: int, style: str, regex: str) -> _Field:
    if style == "NOT_NEGATIVE" and min_w == max_w and max_w <= 2:
        fmt = "{:0%dd}" % min_w
        emit: Emitter = lambda v, z: fmt.format(get(v))  # noqa: E731 - hot path, no padding logic
    else:
        emit = lambda v, z: _fmt_num(get(v), min_w, max_w, style, field)  # noqa: E731
    return _Field(letter, count, needs, emit, regex, lambda s: (field, int(s)))


def _value(letter: str, count: int, needs: str, field: str, get: Callable[[Any], int],
           max_count: int = 2) -> _Field:
    """Letters like d, H, m: one letter prints unpadded, two print two digits."""
    if count > max_count:
        raise FunctionError(f"Too many pattern letters: {letter}")
    if count == 1:
        return _numeric(letter, count, needs, field, get, 1, 19, "NORMAL", r"\d{1,19}")
    return _numeric(letter, count, needs, field, get, count, count, "NOT_NEGATIVE",
                    r"\d{%d}" % count)


def _text(letter: str, count: int, needs: str, field: str, get: Callable[[Any], int],
          style: int) -> _Field:
    names = _TEXT_BY_VALUE[(field, style)]
    lookup = {k.lower(): v for k, v in _TEXT[(field, style)].items()}
    alternatives = sorted(_TEXT[(field, style)], key=len, reverse=True)
    return _Field(letter, count, needs, lambda v, z: names[get(v)],
                  "|".join(re.escape(a) for a in alternatives),
                  lambda s: (field, lookup[s.lower()]))


def _year_field(letter: str, count: int, field: str, get: Callable[[Any], int],
                parseable: bool = True) -> _Field:
    if count == 2:  # reduced: two digits, base year 2000
        f = _Field(letter, count, "date", lambda v, z: f"{get(v) % 100:02d}", r"\d{2}",
                   lambda s: (field, 2000 + int(s)))
    elif count < 4:
        f = _numeric(letter, count, "date", field, get, count, 19, "NORMAL",
                     r"-?\d{%d,19}" % count)
    else:
        f = _numeric(letter, count, "date", field, get, count, 19, "EXCEEDS_PAD",
                     r"[+-]?\d{%d,19}" % count)
    return f if parseable else _Field(f.letter, f.count, f.needs, f.emit, None)


def _fraction(count: int) -> _Field:
    if count > 9:
        raise FunctionError("Too many pattern letters: S")
    div = 10 ** (9 - count)
    fmt = "{:0%dd}" % count
    # values reach the formatter as datetime/time objects: microseconds, never finer
    return _Field("S", count, "time", lambda v, z: fmt.format(v.microsecond * 1000 // div),
                  r"\d{%d}" % count, lambda s: (NANO, int(s.ljust(9, "0"))))


def _milli_of_day(v: Any) -> int:
    return ((v.hour * 60 + v.minute) * 60 + v.second) * 1000 + v.microsecond // 1000


def _build_field(letter: str, count: int) -> _Field:
    """DateTimeFormatterBuilder.parseField for one run of a pattern letter."""
    c = count
    if letter == "G":
        if c > 5:
            raise FunctionError("Too many pattern letters: G")
        return _text("G", c, "date", ERA, lambda v: 1, min(max(c, 3), 5))
    if letter in "uy":
        return _year_field(letter, c, YEAR if letter == "u" else YEAR_OF_ERA, lambda v: v.year)
    if letter == "Y":
        return _year_field("Y", c, "WeekBasedYear", _week_based_year, parseable=False)
    if letter in "ML":
        if c > 5:
            raise FunctionError(f"Too many pattern letters: {letter}")
        if c <= 2:
            return _value(letter, c, "date", MONTH, lambda v: v.month)
        return _text(letter, c, "date", MONTH, lambda v: v.month, c)
    if letter in "Qq":
        if c > 5:
            raise FunctionError(f"Too many pattern letters: {letter}")
        get = lambda v: (v.month - 1) // 3 + 1  # noqa: E731
        if c <= 2:
            return _value(letter, c, "date", QUARTER, get)
        return _text(letter, c, "date", QUARTER, get, c)
    if letter == "d":
        return _value("d", c, "date", DAY, lambda v: v.day)
    if letter == "D":
        if c > 3:
            raise FunctionError("Too many pattern letters: D")
        if c == 1:
            return _numeric("D", c, "date", DOY, _day_of_year, 1, 19, "NORMAL", r"\d{1,19}")
        return _numeric("D", c, "date", DOY, _day_of_year, c, 3, "NOT_NEGATIVE",
                        r"\d{%d,3}" % c)
    if letter == "E":
        if c > 5:
            raise FunctionError("Too many pattern letters: E")
        return _text("E", c, "date", DOW, lambda v: v.isoweekday(), max(c, 3))
    if letter in "ec":
        if c > 5 or (letter == "c" and c == 2):
            raise FunctionError(f"Too many pattern letters: {letter}" if c > 5
                                else "Invalid pattern \"cc\"")
        if c <= 2:
            f = _value(letter, c, "date", "DayOfWeek", _us_dow)
            return _Field(letter, c, "date", f.emit, None)
        f = _text(letter, c, "date", DOW, lambda v: v.isoweekday(), c)
        return _Field(letter, c, "date", f.emit, None)
    if letter == "w":
        f = _value("w", c, "date", "WeekOfWeekBasedYear", _week_of_week_based_year)
        return _Field("w", c, "date", f.emit, None)
    if letter == "W":
        if c > 1:
            raise FunctionError("Too many pattern letters: W")
        return _Field("W", c, "date", lambda v, z: str(_week_of_month(v)), None)
    if letter == "a":
        if c > 1:
            raise FunctionError("Too many pattern letters: a")
        return _text("a", c, "time", AMPM, lambda v: v.hour // 12, 3)
    if letter == "h":
        return _value("h", c, "time", CLOCK_HOUR_OF_AMPM, lambda v: (v.hour % 12) or 12)
    if letter == "K":
        return _value("K", c, "time", HOUR_OF_AMPM, lambda v: v.hour % 12)
    if letter == "k":
        return _value("k", c, "time", CLOCK_HOUR, lambda v: v.hour or 24)
    if letter == "H":
        return _value("H", c, "time", HOUR, lambda v: v.hour)
    if letter == "m":
        return _value("m", c, "time", MINUTE, lambda v: v.minute)
    if letter == "s":
        return _value("s", c, "time", SECOND, lambda v: v.second)
    if letter == "S":
        return _fraction(c)
    if letter in "nNA":
        field, get = {
            "n": (NANO, lambda v: v.microsecond * 1000),
            "N": (NANO_OF_DAY, lambda v: _milli_of_day(v) * 1_000_000 + v.microsecond % 1000 * 1000),
            "A": (MILLI_OF_DAY, _milli_of_day),
        }[letter]
        if c == 1:
            return _numeric(letter, c, "time", field, get, 1, 19, "NORMAL", r"\d{1,19}")
        return _numeric(letter, c, "time", field, get, c, 19, "NOT_NEGATIVE", r"\d{%d,19}" % c)
    if letter == "V":
        if c != 2:
            raise FunctionError("Pattern letter count must be 2: V")
        return _Field("V", c, "zone", lambda v, z: z.id, r"[A-Za-z0-9~/._+:-]+",  # type: ignore[union-attr]
                      lambda s: (ZONE, zone_of(s)))
    if letter == "z":
        if c > 4:
            raise FunctionError("Too many pattern letters: z")
        rx = r"[A-Za-z][A-Za-z0-9~/._+:-]*"
        if c == 4:
            def full(v: Any, z: Zone | None) -> str:
                assert z is not None
                name = _ZONE_FULL_NAMES.get(z.id)
                if name is None:
                    raise FunctionError(f"Full time-zone names are not supported: {z.id}")
                return name
            return _Field("z", c, "zone", full, rx, lambda s: (ZONE, _zone_from_text(s)))
        return _Field("z", c, "zone", lambda v, z: v.tzname(), rx,
                      lambda s: (ZONE, _zone_from_text(s)))
    if letter in "XxZ":
        if c > 5:
            raise FunctionError(f"Too many pattern letters: {letter}")
        if letter == "Z" and c == 4:
            return _Field("Z", c, "offset", lambda v, z: _localized_offset(_offset_total(v), True),
                          r"GMT(?:[+-]\d{2}:\d{2}(?::\d{2})?)?",
                          lambda s: (OFFSET, _parse_offset_text(s)))
        shapes = ("+HHmm", "+HHMM", "+HH:MM", "+HHMMss", "+HH:MM:ss")
        if letter == "Z":
            shape, zero = ("+HHMM", "+0000") if c <= 3 else ("+HH:MM:ss", "Z")
        else:
            shape = shapes[c - 1]
            zero = "Z" if letter == "X" else ("+00" if c == 1 else "+0000" if c % 2 == 0 else "+00:00")
        fmt = _offset_formatter(shape, zero)
        return _Field(letter, c, "offset", lambda v, z: fmt(_offset_total(v)),
                      _offset_regex(shape, zero), lambda s: (OFFSET, _parse_offset_text(s)))
    if letter == "O":
        if c not in (1, 4):
            raise FunctionError("Pattern letter count must be 1 or 4: O")
        full = c == 4
        rx = (r"GMT(?:[+-]\d{2}:\d{2}(?::\d{2})?)?" if full
              else r"GMT(?:[+-]\d{1,2}(?::\d{2}(?::\d{2})?)?)?")
        return _Field("O", c, "offset", lambda v, z: _localized_offset(_offset_total(v), full), rx,
                      lambda s: (OFFSET, _parse_offset_text(s)))
    raise FunctionError(f"Unknown pattern letter: {letter}")


# ========================================================================== pattern compile
@dataclass(frozen=True)
class _Lit:
    text: str


@dataclass(frozen=True)
class _Opt:
    items: tuple[Any, ...]


def _tokenize(pattern: str) -> tuple[Any, ...]:
    """DateTimeFormatterBuilder.appendPattern: letters, 'quoted literals', [optional]."""
    stack: list[list[Any]] = [[]]
    pos, n = 0, len(pattern)
    while pos < n:
        cur = pattern[pos]
        if ("A" <= cur <= "Z") or ("a" <= cur <= "z"):
            start = pos
            while pos < n and pattern[pos] == cur:
                pos += 1
            if cur == "p":
                raise FunctionError("Pad letter 'p' is not supported")
            stack[-1].append(_build_field(cur, pos - start))
            continue
        if cur == "'":
            start = pos
            pos += 1
            while pos < n:
                if pattern[pos] == "'":
                    if pos + 1 < n and pattern[pos + 1] == "'":
                        pos += 1
                    else:
                        break
                pos += 1
            if pos >= n:
                raise FunctionError(f"Pattern ends with an incomplete string literal: {pattern}")
            text = pattern[start + 1:pos]
            stack[-1].append(_Lit("'" if text == "" else text.replace("''", "'")))
        elif cur == "[":
            stack.append([])
        elif cur == "]":
            if len(stack) == 1:
                raise FunctionError("Pattern invalid as it contains ] without previous [")
            items = stack.pop()
            stack[-1].append(_Opt(tuple(items)))
        elif cur in "{}#":
            raise FunctionError(f"Pattern includes reserved character: '{cur}'")
        else:
            stack[-1].append(_Lit(cur))
        pos += 1
    while len(stack) > 1:  # an unclosed [ runs to the end of the pattern
        items = stack.pop()
        stack[-1].append(_Opt(tuple(items)))
    return tuple(stack[0])


def _needs(items: tuple[Any, ...]) -> set[str]:
    out: set[str] = set()
    for it in items:
        if isinstance(it, _Field):
            out.add(it.needs)
        elif isinstance(it, _Opt):
            out |= _needs(it.items)
    return out


def _emitters(items: tuple[Any, ...], caps: frozenset[str]) -> tuple[Emitter, ...] | str:
    """The emitters printing ``items`` for a value providing ``caps``, or the error message
    when a required field is missing (optional sections are dropped instead)."""
    out: list[Emitter] = []
    lit = ""
    for it in items:
        if isinstance(it, _Lit):
            lit += it.text
            continue
        if isinstance(it, _Opt):
            if not _needs(it.items) <= caps:
                continue
            sub = _emitters(it.items, caps)
            assert not isinstance(sub, str)
            parts: list[Emitter] = list(sub)
        else:
            if it.needs not in caps:
                return _field_error(it)
            parts = [it.emit]
        if lit:
            out.append(lambda v, z, s=lit: s)
            lit = ""
        out.extend(parts)
    if lit:
        out.append(lambda v, z, s=lit: s)
    return tuple(out)


_LETTER_FIELDS = {"G": ERA, "u": YEAR, "y": YEAR_OF_ERA, "Y": "WeekBasedYear", "M": MONTH,
                  "L": MONTH, "Q": QUARTER, "q": QUARTER, "d": DAY, "D": DOY, "E": DOW,
                  "e": DOW, "c": DOW, "w": "WeekOfWeekBasedYear", "W": "WeekOfMonth",
                  "a": AMPM, "h": CLOCK_HOUR_OF_AMPM, "K": HOUR_OF_AMPM, "k": CLOCK_HOUR,
                  "H": HOUR, "m": MINUTE, "s": SECOND, "S": NANO, "n": NANO, "N": NANO_OF_DAY,
                  "A": MILLI_OF_DAY, "X": OFFSET, "x": OFFSET, "Z": OFFSET, "O": OFFSET}


def _field_error(f: _Field) -> str:
    if f.needs == "zone":
        return "Unable to extract ZoneId from temporal"
    return f"Unsupported field: {_LETTER_FIELDS.get(f.letter, f.letter)}"


def _regex(items: tuple[Any, ...], handlers: list[tuple[int, Callable[[str], tuple[str, Any]]]],
           unsupported: list[str]) -> str:
    out = []
    for it in items:
        if isinstance(it, _Lit):
            out.append(re.escape(it.text))
        elif isinstance(it, _Opt):
            out.append(f"(?:{_regex(it.items, handlers, unsupported)})?")
        else:
            if it.regex is None or it.store is None:
                unsupported.append(it.letter * it.count)
                out.append("(?:)")
                continue
            handlers.append((len(handlers) + 1, it.store))
            out.append(f"({it.regex})")
    return "".join(out)


@dataclass(frozen=True, eq=False)
class DateTimePattern:
    """A compiled java.time DateTimeFormatter pattern (see the module docstring)."""

    pattern: str
    date_emitters: tuple[Emitter, ...] | str  # str: why a DATE cannot be printed
    time_emitters: tuple[Emitter, ...] | str
    zoned_emitters: tuple[Emitter, ...] | str
    # RE2-backed: adjacent variable-width fields ('yDyDyDyD') backtrack exponentially in re.
    regex: SafePattern
    regex_ci: SafePattern
    handlers: tuple[tuple[int, Callable[[str], tuple[str, Any]]], ...]
    unparseable: str | None  # letters this pattern can print but not parse

    def format_date(self, epoch_day: int) -> str:
        """Print a DATE (days since the epoch), as LocalDate.format."""
        em = self.date_emitters
        if isinstance(em, str):
            raise FunctionError(em)
        d = date.fromordinal(epoch_day + _EPOCH_ORDINAL)
        return "".join([e(d, None) for e in em])

    def format_time(self, ms_of_day: int) -> str:
        """Print a TIME (millis since midnight), as LocalTime.format."""
        em = self.time_emitters
        if isinstance(em, str):
            raise FunctionError(em)
        t = (datetime.min + timedelta(milliseconds=ms_of_day)).time()
        return "".join([e(t, None) for e in em])

    def format_timestamp(self, epoch_ms: int, zone: Zone) -> str:
        """Print a TIMESTAMP (epoch millis) in ``zone``, as ZonedDateTime.format."""
        em = self.zoned_emitters
        if isinstance(em, str):
            raise FunctionError(em)
        dt = _zoned(epoch_ms, zone)
        return "".join([e(dt, zone) for e in em])

    def parse_fields(self, text: str, case_insensitive: bool = False) -> dict[str, Any]:
        """Parse ``text`` into raw java.time fields (not yet resolved)."""
        if self.unparseable:
            raise FunctionError(f"Parsing pattern letters {self.unparseable} is not supported")
        m = (self.regex_ci if case_insensitive else self.regex).fullmatch(text)
        if m is None:
            raise FunctionError(f"Text '{text}' could not be parsed")
        fields: dict[str, Any] = {}
        for group, store in self.handlers:
            s = m.group(group)
            if s is None:
                continue
            name, value = store(s)
            old = fields.get(name)
            if old is not None and old != value:
                raise FunctionError(f"Text '{text}' could not be parsed: conflicting {name}")
            fields[name] = value
        return fields


@lru_cache(maxsize=1000)
def _compile_or_error(pattern: str) -> DateTimePattern | Exception:
    try:
        items = _tokenize(pattern)
        handlers: list[tuple[int, Callable[[str], tuple[str, Any]]]] = []
        unsupported: list[str] = []
        rx = _regex(items, handlers, unsupported)
        return DateTimePattern(
            pattern,
            _emitters(items, _CAPS["date"]), _emitters(items, _CAPS["time"]),
            _emitters(items, _CAPS["zoned"]),
            SafePattern(rx, re.DOTALL, source=pattern),
            SafePattern(rx, re.DOTALL | re.IGNORECASE, source=pattern),
            tuple(handlers), ", ".join(unsupported) or None)
    except FunctionError as exc:
        return exc
    except (ValueError, re.error) as exc:
        return FunctionError(str(exc))


def compile_pattern(pattern: str) -> DateTimePattern:
    """Compile (memoized) a DateTimeFormatter pattern; FunctionError if it is invalid."""
    got = _compile_or_error(pattern)
    if isinstance(got, Exception):
        raise got
    return got


# ============================================================================== resolving
def _merge(fields: dict[str, Any], name: str, value: int) -> None:
    old = fields.get(name)
    if old is not None and old != value:
        raise FunctionError(f"Conflict found: Field {name} {old} differs from {name} {value} "
                            f"derived from the other fields")
    fields[name] = value


def _check(name: str, value: int) -> int:
    lo, hi = _RANGES[name]
    if not lo <= value <= hi:
        raise FunctionError(f"Invalid value for {name} (valid values {lo} - {hi}): {value}")
    return value


@dataclass(frozen=True)
class Resolved:
    """Fields after java.time SMART resolution: a date (epoch day), a time (nano of day),
    the parsed zone or offset, and whatever fields were left unresolved."""

    epoch_day: int | None
    nano_of_day: int | None
    zone: Zone | None
    offset: int | None
    rest: dict[str, int]


def _cross_check(epoch_day: int | None, nano: int | None, rest: dict[str, int]) -> None:
    if not rest:
        return
    d = date.fromordinal(epoch_day + _EPOCH_ORDINAL) if epoch_day is not None else None
    for name, value in rest.items():
        if d is not None and name in _DATE_FIELDS:
            actual = {DOW: d.isoweekday(), DOY: _day_of_year(d), MONTH: d.month, DAY: d.day,
                      QUARTER: (d.month - 1) // 3 + 1, ERA: 1, YEAR: d.year}.get(name)
        elif nano is not None and name in _TIME_FIELDS:
            hour = nano // 3_600_000_000_000
            actual = {AMPM: hour // 12, HOUR_OF_AMPM: hour % 12, HOUR: hour,
                      MINUTE: nano // 60_000_000_000 % 60, SECOND: nano // 1_000_000_000 % 60,
                      NANO: nano % 1_000_000_000}.get(name)
        else:
            actual = None
        if actual is not None and actual != value:
            raise FunctionError(f"Conflict found: Field {name} {actual} differs from "
                                f"{name} {value} derived from the parsed date/time")


def resolve(fields: dict[str, Any]) -> Resolved:
    """java.time's Parsed.resolve in SMART mode over the fields this parser produces."""
    f = dict(fields)
    zone = f.pop(ZONE, None)
    offset = f.pop(OFFSET, None)
    # ---- date
    yoe = f.pop(YEAR_OF_ERA, None)
    if yoe is not None:
        _check(YEAR_OF_ERA, yoe)
        era = f.pop(ERA, None)
        if era is None:
            year = f.get(YEAR)
            _merge(f, YEAR, yoe if year is None or year > 0 else 1 - yoe)
        else:
            _merge(f, YEAR, yoe if _check(ERA, era) == 1 else 1 - yoe)
    epoch_day = None
    if YEAR in f:
        year = _check(YEAR, f[YEAR])
        if MONTH in f and DAY in f:
            month, day = _check(MONTH, f.pop(MONTH)), _check(DAY, f.pop(DAY))
            f.pop(YEAR)
            if day > 28:  # SMART: clamp to the last day of the month
                day = min(day, 30 if month in (4, 6, 9, 11) else
                          (29 if _year_len(year) == 366 else 28) if month == 2 else 31)
            epoch_day = _epoch_day(year, month, day)
        elif DOY in f:
            doy = _check(DOY, f.pop(DOY))
            f.pop(YEAR)
            if doy == 366 and _year_len(year) == 365:
                raise FunctionError(f"Invalid date 'DayOfYear 366' as '{year}' is not a leap year")
            epoch_day = _epoch_day(year, 1, 1) + doy - 1
    # ---- time
    ch = f.pop(CLOCK_HOUR, None)
    if ch is not None:
        if ch != 0:
            _check(CLOCK_HOUR, ch)
        _merge(f, HOUR, 0 if ch == 24 else ch)
    cha = f.pop(CLOCK_HOUR_OF_AMPM, None)
    if cha is not None:
        if cha != 0:
            _check(CLOCK_HOUR_OF_AMPM, cha)
        _merge(f, HOUR_OF_AMPM, 0 if cha == 12 else cha)
    if AMPM in f and HOUR_OF_AMPM in f:
        ap, hap = _check(AMPM, f.pop(AMPM)), _check(HOUR_OF_AMPM, f.pop(HOUR_OF_AMPM))
        _merge(f, HOUR, ap * 12 + hap)
    nod = f.pop(NANO_OF_DAY, None)
    if nod is not None:
        _check(NANO_OF_DAY, nod)
        _merge(f, HOUR, nod // 3_600_000_000_000)
        _merge(f, MINUTE, nod // 60_000_000_000 % 60)
        _merge(f, SECOND, nod // 1_000_000_000 % 60)
        _merge(f, NANO, nod % 1_000_000_000)
    mod = f.pop(MILLI_OF_DAY, None)
    if mod is not None:
        _check(MILLI_OF_DAY, mod)
        _merge(f, HOUR, mod // 3_600_000)
        _merge(f, MINUTE, mod // 60_000 % 60)
        _merge(f, SECOND, mod // 1000 % 60)
        _merge(f, NANO, mod % 1000 * 1_000_000)
    nano_of_day = None
    excess = 0
    hod = f.get(HOUR)
    if hod is not None:
        moh, som, nos = f.get(MINUTE), f.get(SECOND), f.get(NANO)
        # java.time refuses to invent a minute under a given second, or a second under nanos
        if not ((moh is None and (som is not None or nos is not None))
                or (moh is not None and som is None and nos is not None)):
            for k in (HOUR, MINUTE, SECOND, NANO):
                f.pop(k, None)
            moh, som, nos = moh or 0, som or 0, nos or 0
            if hod == 24 and moh == 0 and som == 0 and nos == 0:  # SMART: 24:00 is midnight
                hod, excess = 0, 1
            _check(HOUR, hod), _check(MINUTE, moh), _check(SECOND, som), _check(NANO, nos)
            nano_of_day = ((hod * 60 + moh) * 60 + som) * 1_000_000_000 + nos
    for name, value in f.items():
        if name in _RANGES and name in _TIME_FIELDS:
            _check(name, value)
    if epoch_day is not None and nano_of_day is not None and excess:
        epoch_day += excess
    _cross_check(epoch_day, nano_of_day, f)
    return Resolved(epoch_day, nano_of_day, zone, offset, f)


def _epoch_day(year: int, month: int, day: int) -> int:
    if not 1 <= year <= 9999:
        raise FunctionError(f"Year {year} is outside the supported range 1-9999")
    try:
        return date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError as exc:
        raise FunctionError(f"Invalid date: {exc}") from exc


def parse_timestamp(text: str, pattern: str, zone: Zone) -> int:
    """ksqlDB's StringToTimestampParser: epoch millis of ``text``. Fields the pattern lacks
    default to 1970-01-01T00:00; a zone or offset in the text beats ``zone``."""
    fields = compile_pattern(pattern).parse_fields(text)
    # parseDefaulting(YEAR_OF_ERA 1970, MONTH 1, DAY 1, HOUR_OF_DAY 0): only fields not parsed
    for name, default in ((YEAR_OF_ERA, 1970), (MONTH, 1), (DAY, 1), (HOUR, 0)):
        if name not in fields:
            fields[name] = default
    r = resolve(fields)
    if r.epoch_day is None:
        raise FunctionError(f"Text '{text}' could not be parsed: no date")
    nano = r.nano_of_day
    if nano is None:  # ksqlDB overlays whatever time fields were parsed onto midnight
        rest = r.rest
        nano = (((rest.get(HOUR, 0) * 60 + rest.get(MINUTE, 0)) * 60 + rest.get(SECOND, 0))
                * 1_000_000_000 + rest.get(NANO, 0))
    ms = nano // 1_000_000
    if r.offset is not None:
        return r.epoch_day * MS_PER_DAY + ms - r.offset * 1000
    return epoch_ms_of_local(r.epoch_day, ms, r.zone or zone)


def _parse_local_date(text: str, pattern: str, ksql_parse_date: bool) -> int:
    """LocalDate from text: PARSE_DATE (case-insensitive, day defaults to 1, no time fields)
    or STRINGTODATE (DateTimeFormatter.ofPattern: strict)."""
    p = compile_pattern(pattern)
    fields = p.parse_fields(text, case_insensitive=ksql_parse_date)
    if ksql_parse_date:
        if any(k in _TIME_FIELDS for k in fields):
            raise FunctionError("Date format contains time field.")
        fields.setdefault(DAY, 1)
    r = resolve(fields)
    if r.epoch_day is None:
        raise FunctionError(f"Text '{text}' could not be parsed: Unable to obtain LocalDate")
    return r.epoch_day


def _parse_local_time(text: str, pattern: str) -> int:
    """PARSE_TIME: millis of day; case-insensitive; a date field in the pattern is an error."""
    fields = compile_pattern(pattern).parse_fields(text, case_insensitive=True)
    if any(k in _DATE_FIELDS for k in fields):
        raise FunctionError("Time format contains date field.")
    r = resolve(fields)
    if r.nano_of_day is None:
        raise FunctionError(f"Text '{text}' could not be parsed: Unable to obtain LocalTime")
    return r.nano_of_day // 1_000_000


# ================================================================================ intervals
_UNIT_NANOS = {
    "NANOSECONDS": 1, "MICROSECONDS": 1_000, "MILLISECONDS": 1_000_000,
    "SECONDS": 1_000_000_000, "MINUTES": 60_000_000_000, "HOURS": 3_600_000_000_000,
    "DAYS": NS_PER_DAY,
}
_UNIT_NANOS.update({k[:-1]: v for k, v in list(_UNIT_NANOS.items())})
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _trunc_div(a: int, b: int) -> int:
    """Java's integer division (rounds toward zero)."""
    q = abs(a) // b
    return q if a >= 0 else -q


def _unit_to_millis(unit: str, n: int) -> int:
    """TimeUnit.toMillis: truncating below a millisecond, saturating at Long bounds."""
    ns = _UNIT_NANOS[unit]
    ms = n * (ns // 1_000_000) if ns >= 1_000_000 else _trunc_div(n * ns, 1_000_000)
    return max(_LONG_MIN, min(_LONG_MAX, ms))


# ============================================================================== the UDFs
def _fail(kind: str, what: Any, pattern: str, exc: Exception, tz: str | None = None) -> FunctionError:
    where = f" and time zone '{tz}'" if tz is not None else ""
    return FunctionError(f"Failed to {kind} {what} with formatter '{pattern}'{where}: {exc}")


@udf("UNIX_DATE", "INTEGER")
def unix_date_now() -> int:
    """Gets an integer representing days since epoch."""
    return (_time.time_ns() // 1_000_000) // MS_PER_DAY


@udf("UNIX_DATE", "INTEGER", [("date", "DATE")])
def unix_date(d: int | None) -> int | None:
    """Returns the number of days since 1970-01-01 of the given DATE."""
    return d


@udf("UNIX_TIMESTAMP", "BIGINT")
def unix_timestamp_now() -> int:
    """Gets the Unix timestamp in milliseconds, represented as a BIGINT."""
    return _time.time_ns() // 1_000_000


@udf("UNIX_TIMESTAMP", "BIGINT", [("timestamp", "TIMESTAMP")])
def unix_timestamp(ts: int | None) -> int | None:
    """Returns the milliseconds since the epoch of the given TIMESTAMP."""
    return ts


@udf("FROM_UNIXTIME", "TIMESTAMP", [("epochMilli", "BIGINT")])
def from_unixtime(ms: int | None) -> int | None:
    """Converts a BIGINT millisecond timestamp value into a TIMESTAMP value."""
    return ms


@udf("FROM_DAYS", "DATE", [("days", "INTEGER")])
def from_days(days: int | None) -> int | None:
    """Converts an INT number of days since epoch to a DATE value."""
    return days


@udf("DATETOSTRING", "STRING", [("epochDays", "INTEGER"), ("formatPattern", "STRING")])
def datetostring(days: int | None, pattern: str | None) -> str | None:
    """Converts an integer representing days since epoch to a date string using the given
    format pattern. The format pattern should be in the format expected by
    java.time.format.DateTimeFormatter."""
    if pattern is None:
        return None
    if days is None:  # a primitive int parameter in ksqlDB
        raise FunctionError("Failed to format date null: epochDays is null")
    try:
        return compile_pattern(pattern).format_date(days)
    except Exception as exc:
        raise _fail("format date", days, pattern, exc) from exc


@udf("STRINGTODATE", "INTEGER", [("formattedDate", "STRING"), ("formatPattern", "STRING")])
def stringtodate(text: str | None, pattern: str | None) -> int:
    """Converts a string representation of a date into an integer representing days since
    epoch using the given format pattern. The format pattern should be in the format expected
    by java.time.format.DateTimeFormatter."""
    # ksqlDB throws on NULL here: there is no sentinel value for a "null" date
    try:
        if text is None or pattern is None:
            raise FunctionError("null argument")
        return _parse_local_date(text, pattern, ksql_parse_date=False)
    except Exception as exc:
        raise FunctionError(f"Failed to parse date '{text}' with formatter '{pattern}': {exc}") from exc


@udf("TIMESTAMPTOSTRING", "STRING", [("epochMilli", "BIGINT"), ("formatPattern", "STRING")])
def timestamptostring(ms: int | None, pattern: str | None) -> str | None:
    """Converts a BIGINT millisecond timestamp value into the string representation of the
    timestamp in the given format (java.time.format.DateTimeFormatter), in the server's
    time zone (UTC)."""
    if pattern is None:
        return None
    try:
        if ms is None:
            raise FunctionError("epochMilli is null")
        return compile_pattern(pattern).format_timestamp(ms, UTC)
    except Exception as exc:
        raise _fail("format timestamp", ms, pattern, exc) from exc


@udf("TIMESTAMPTOSTRING", "STRING", [("epochMilli", "BIGINT"), ("formatPattern", "STRING"),
                                     ("timeZone", "STRING")])
def timestamptostring_tz(ms: int | None, pattern: str | None, tz: str | None) -> str | None:
    """Converts a BIGINT millisecond timestamp value into the string representation of the
    timestamp in the given format and time zone (java.time ZoneId)."""
    if pattern is None or tz is None:
        return None
    try:
        if ms is None:
            raise FunctionError("epochMilli is null")
        return compile_pattern(pattern).format_timestamp(ms, zone_of(tz))
    except Exception as exc:
        raise _fail("format timestamp", ms, pattern, exc, tz) from exc


@udf("STRINGTOTIMESTAMP", "BIGINT", [("formattedTimestamp", "STRING"), ("formatPattern", "STRING")])
def stringtotimestamp(text: str | None, pattern: str | None) -> int:
    """Converts a string value in the given format into the BIGINT value that represents the
    millisecond timestamp, in the server's time zone (UTC) unless the text carries one."""
    try:
        if text is None or pattern is None:
            raise FunctionError("null argument")
        return parse_timestamp(text, pattern, UTC)
    except Exception as exc:
        raise FunctionError(
            f"Failed to parse timestamp '{text}' with formatter '{pattern}': {exc}") from exc


@udf("STRINGTOTIMESTAMP", "BIGINT", [("formattedTimestamp", "STRING"), ("formatPattern", "STRING"),
                                     ("timeZone", "STRING")])
def stringtotimestamp_tz(text: str | None, pattern: str | None, tz: str | None) -> int:
    """Converts a string value in the given format and time zone into the BIGINT value that
    represents the millisecond timestamp."""
    try:
        if text is None or pattern is None or tz is None:
            raise FunctionError("null argument")
        return parse_timestamp(text, pattern, zone_of(tz))
    except Exception as exc:
        raise FunctionError(f"Failed to parse timestamp '{text}' with formatter '{pattern}' "
                            f"and time zone '{tz}': {exc}") from exc


@udf("FORMAT_DATE", "STRING", [("date", "DATE"), ("formatPattern", "STRING")])
def format_date(d: int | None, pattern: str | None) -> str | None:
    """Converts a DATE value into a string representing the date in the given format."""
    if d is None or pattern is None:
        return None
    try:
        return compile_pattern(pattern).format_date(d)
    except Exception as exc:
        raise _fail("format date", d, pattern, exc) from exc


@udf("PARSE_DATE", "DATE", [("formattedDate", "STRING"), ("formatPattern", "STRING")])
def parse_date(text: str | None, pattern: str | None) -> int | None:
    """Converts a string representation of a date in the given format into a DATE value."""
    if text is None or pattern is None:
        return None
    try:
        return _parse_local_date(text, pattern, ksql_parse_date=True)
    except Exception as exc:
        raise FunctionError(f"Failed to parse date '{text}' with formatter '{pattern}': {exc}") from exc


@udf("FORMAT_TIME", "STRING", [("time", "TIME"), ("formatPattern", "STRING")])
def format_time(t: int | None, pattern: str | None) -> str | None:
    """Converts a TIME value into a string representing the time in the given format."""
    if t is None or pattern is None:
        return None
    try:
        return compile_pattern(pattern).format_time(t)
    except Exception as exc:
        raise _fail("format time", t, pattern, exc) from exc


@udf("PARSE_TIME", "TIME", [("formattedTime", "STRING"), ("formatPattern", "STRING")])
def parse_time(text: str | None, pattern: str | None) -> int | None:
    """Converts a string representation of a time in the given format into a TIME value."""
    if text is None or pattern is None:
        return None
    try:
        return _parse_local_time(text, pattern)
    except Exception as exc:
        raise FunctionError(f"Failed to parse time '{text}' with formatter '{pattern}': {exc}") from exc


@udf("FORMAT_TIMESTAMP", "STRING", [("timestamp", "TIMESTAMP"), ("formatPattern", "STRING")])
def format_timestamp(ts: int | None, pattern: str | None) -> str | None:
    """Converts a TIMESTAMP value into the string representation of the timestamp in the
    given format, in GMT."""
    if ts is None or pattern is None:
        return None
    try:
        return compile_pattern(pattern).format_timestamp(ts, GMT)
    except Exception as exc:
        raise _fail("format timestamp", ts, pattern, exc) from exc


@udf("FORMAT_TIMESTAMP", "STRING", [("timestamp", "TIMESTAMP"), ("formatPattern", "STRING"),
                                    ("timeZone", "STRING")])
def format_timestamp_tz(ts: int | None, pattern: str | None, tz: str | None) -> str | None:
    """Converts a TIMESTAMP value into the string representation of the timestamp in the
    given format and time zone (java.time ZoneId)."""
    if ts is None or pattern is None or tz is None:
        return None
    try:
        return compile_pattern(pattern).format_timestamp(ts, zone_of(tz))
    except Exception as exc:
        raise _fail("format timestamp", ts, pattern, exc, tz) from exc


@udf("PARSE_TIMESTAMP", "TIMESTAMP", [("formattedTimestamp", "STRING"), ("formatPattern", "STRING")])
def parse_timestamp_udf(text: str | None, pattern: str | None) -> int | None:
    """Converts a string value in the given format into a TIMESTAMP value, in GMT unless the
    text carries a zone or offset."""
    if text is None or pattern is None:
        return None
    try:
        return parse_timestamp(text, pattern, GMT)
    except Exception as exc:
        raise FunctionError(
            f"Failed to parse timestamp '{text}' with formatter '{pattern}': {exc}") from exc


@udf("PARSE_TIMESTAMP", "TIMESTAMP", [("formattedTimestamp", "STRING"), ("formatPattern", "STRING"),
                                      ("timeZone", "STRING")])
def parse_timestamp_tz(text: str | None, pattern: str | None, tz: str | None) -> int | None:
    """Converts a string value in the given format and time zone into a TIMESTAMP value."""
    if text is None or pattern is None or tz is None:
        return None
    try:
        return parse_timestamp(text, pattern, zone_of(tz))
    except Exception as exc:
        raise FunctionError(f"Failed to parse timestamp '{text}' with formatter '{pattern}' "
                            f"and time zone '{tz}': {exc}") from exc


@udf("CONVERT_TZ", "TIMESTAMP", [("timestamp", "TIMESTAMP"), ("fromTimeZone", "STRING"),
                                 ("toTimeZone", "STRING")])
def convert_tz(ts: int | None, from_tz: str | None, to_tz: str | None) -> int | None:
    """Converts a TIMESTAMP value from one time zone to another: the result is shifted by the
    difference of the two zones' offsets at that instant."""
    if ts is None or from_tz is None or to_tz is None:
        return None
    try:
        src, dst = zone_of(from_tz), zone_of(to_tz)
    except Exception as exc:
        raise FunctionError(f"Invalid time zone: {exc}") from exc
    return ts + (_offset_total(_zoned(ts, dst)) - _offset_total(_zoned(ts, src))) * 1000


@udf("DATEADD", "DATE", [("unit", "INTERVALUNIT"), ("interval", "INTEGER"), ("date", "DATE")])
def dateadd(unit: str | None, interval: int | None, d: int | None) -> int | None:
    """Adds an interval to a DATE: the date moves by the interval's whole days."""
    if unit is None or interval is None or d is None:
        return None
    return _trunc_div(d * MS_PER_DAY + _unit_to_millis(unit, interval), MS_PER_DAY)


@udf("DATESUB", "DATE", [("unit", "INTERVALUNIT"), ("interval", "INTEGER"), ("date", "DATE")])
def datesub(unit: str | None, interval: int | None, d: int | None) -> int | None:
    """Subtracts an interval from a DATE: the date moves by the interval's whole days."""
    if unit is None or interval is None or d is None:
        return None
    return _trunc_div(d * MS_PER_DAY - _unit_to_millis(unit, interval), MS_PER_DAY)


def _time_plus(t: int, nanos: int) -> int:
    return (t * 1_000_000 + nanos) % NS_PER_DAY // 1_000_000


@udf("TIMEADD", "TIME", [("unit", "INTERVALUNIT"), ("interval", "INTEGER"), ("time", "TIME")])
def timeadd(unit: str | None, interval: int | None, t: int | None) -> int | None:
    """Adds an interval to a TIME, wrapping around midnight."""
    if unit is None or interval is None or t is None:
        return None
    return _time_plus(t, _UNIT_NANOS[unit] * interval)


@udf("TIMESUB", "TIME", [("unit", "INTERVALUNIT"), ("interval", "INTEGER"), ("time", "TIME")])
def timesub(unit: str | None, interval: int | None, t: int | None) -> int | None:
    """Subtracts an interval from a TIME, wrapping around midnight."""
    if unit is None or interval is None or t is None:
        return None
    return _time_plus(t, -_UNIT_NANOS[unit] * interval)


@udf("TIMESTAMPADD", "TIMESTAMP", [("unit", "INTERVALUNIT"), ("interval", "INTEGER"),
                                   ("timestamp", "TIMESTAMP")])
def timestampadd(unit: str | None, interval: int | None, ts: int | None) -> int | None:
    """Adds an interval to a TIMESTAMP."""
    if unit is None or interval is None or ts is None:
        return None
    return ts + _unit_to_millis(unit, interval)


@udf("TIMESTAMPSUB", "TIMESTAMP", [("unit", "INTERVALUNIT"), ("interval", "INTEGER"),
                                   ("timestamp", "TIMESTAMP")])
def timestampsub(unit: str | None, interval: int | None, ts: int | None) -> int | None:
    """Subtracts an interval from a TIMESTAMP."""
    if unit is None or interval is None or ts is None:
        return None
    return ts - _unit_to_millis(unit, interval)
