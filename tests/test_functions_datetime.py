"""Date and time functions, resolved through the registry as the expression compiler does.
Expected values come from ksqlDB's QTT cases (datestring, format-date, parse-date, parse-time,
timestamp-to-string, timestampformat, stringtimestamp, convert-tz, *add/*sub ...) or are what
java.time prints for the same pattern."""
from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import pytest

from streamsql import types as t
from streamsql.errors import FunctionError, KsqlStatementException
from streamsql.functions import default_registry
from streamsql.functions.datetime import compile_pattern, parse_timestamp, zone_of
from streamsql.functions.registry import INTERVAL_UNIT

S, I, B, D, TM, TS = t.STRING, t.INTEGER, t.BIGINT, t.DATE, t.TIME, t.TIMESTAMP
U = INTERVAL_UNIT


def call(name: str, arg_types: list[t.SqlType], *args: Any, returns: t.SqlType | None = None) -> Any:
    resolved = default_registry().resolve(name, arg_types)
    if returns is not None:
        assert resolved.return_type == returns
    return resolved.implementation()(*args)


def epoch_day(y: int, m: int, d: int) -> int:
    return (date(y, m, d) - date(1970, 1, 1)).days


def epoch_ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=timezone.utc).timestamp() * 1000)


# ------------------------------------------------------------------------ date <-> string
DATE_FORMATS = [(17662, "yyyy-MM-dd", "2018-05-11"), (18027, "dd/MM/yyyy", "11/05/2019"),
                (18993, "dd-MMM-yyyy", "01-Jan-2022"), (0, "dd-MM-yyyy", "01-01-1970"),
                (-1, "dd-MM-yyyy'Sophia'", "31-12-1969Sophia")]


@pytest.mark.parametrize("days,pattern,text", DATE_FORMATS)
def test_datetostring_and_format_date(days: int, pattern: str, text: str) -> None:
    assert call("DATETOSTRING", [I, S], days, pattern, returns=S) == text
    assert call("FORMAT_DATE", [D, S], days, pattern, returns=S) == text


@pytest.mark.parametrize("text,pattern,days", [
    ("2018-05-11Lit", "yyyy-MM-dd'Lit'", 17662), ("11/05/2019", "dd/MM/yyyy", 18027),
    ("01-Jan-2022", "dd-MMM-yyyy", 18993), ("01-01-1970", "dd-MM-yyyy", 0),
    ("01-JAN-2022", "dd-MMM-yyyy", 18993), ("JAN-2022", "MMM-yyyy", 18993),
])
def test_parse_date(text: str, pattern: str, days: int) -> None:
    assert call("PARSE_DATE", [S, S], text, pattern, returns=D) == days


def test_parse_date_rejects_time_fields_and_nulls_give_null() -> None:
    impl = default_registry().resolve("PARSE_DATE", [S, S]).implementation()
    with pytest.raises(FunctionError, match="contains time field"):
        impl("2018-05-11 10", "yyyy-MM-dd HH")
    with pytest.raises(FunctionError):
        impl("abcd", "yyyy-MM-dd")
    assert impl(None, "yyyy-MM-dd") is None


def test_stringtodate_is_case_sensitive_and_throws_on_bad_input() -> None:
    impl = default_registry().resolve("STRINGTODATE", [S, S]).implementation()
    assert default_registry().resolve("STRINGTODATE", [S, S]).return_type == I
    assert impl("20220101", "yyyyMMdd") == 18993  # adjacent numeric fields
    with pytest.raises(FunctionError, match="Failed to parse date 'foo'"):
        impl("foo", "yyyyMMdd")
    with pytest.raises(FunctionError):
        impl("01-JAN-2022", "dd-MMM-yyyy")
    with pytest.raises(FunctionError):  # ksqlDB throws rather than return NULL here
        impl(None, "yyyyMMdd")


def test_smart_resolution_clamps_day_of_month() -> None:
    impl = default_registry().resolve("STRINGTODATE", [S, S]).implementation()
    assert impl("2019-02-30", "yyyy-MM-dd") == epoch_day(2019, 2, 28)
    assert impl("2020-02-30", "yyyy-MM-dd") == epoch_day(2020, 2, 29)
    with pytest.raises(FunctionError):
        impl("2019-02-32", "yyyy-MM-dd")
    assert impl("2019-032", "yyyy-DDD") == epoch_day(2019, 2, 1)


# ------------------------------------------------------------------------ time <-> string
@pytest.mark.parametrize("text,pattern,ms", [
    ("00:01:05Lit", "HH:mm:ss'Lit'", 65000), ("11/05/19", "HH/mm/ss", 39919000),
    ("01:00:00 PM", "hh:mm:ss a", 46800000), ("01:00:00 Pm", "hh:mm:ss a", 46800000),
    ("12:30 AM", "hh:mm a", 1800000), ("07", "HH", 7 * 3600000),
])
def test_parse_time(text: str, pattern: str, ms: int) -> None:
    assert call("PARSE_TIME", [S, S], text, pattern, returns=TM) == ms


def test_parse_time_rejects_date_fields() -> None:
    impl = default_registry().resolve("PARSE_TIME", [S, S]).implementation()
    with pytest.raises(FunctionError, match="contains date field"):
        impl("2020 10:00", "yyyy HH:mm")


def test_format_time() -> None:
    assert call("FORMAT_TIME", [TM, S], 46800123, "hh:mm:ss.SSS a", returns=S) == "01:00:00.123 PM"
    assert call("FORMAT_TIME", [TM, S], 4000, "HH:mm:ss") == "00:00:04"
    assert call("FORMAT_TIME", [TM, S], None, "HH") is None
    with pytest.raises(FunctionError, match="Unsupported field"):
        call("FORMAT_TIME", [TM, S], 4000, "yyyy HH")


# ------------------------------------------------------------------- timestamp <-> string
def test_timestamptostring_with_zone() -> None:
    ts = 1526075913000
    assert call("TIMESTAMPTOSTRING", [B, S, S], ts, "yyyy-MM-dd HH:mm:ss zzz",
                "America/Los_Angeles", returns=S) == "2018-05-11 14:58:33 PDT"
    assert call("TIMESTAMPTOSTRING", [B, S, S], ts, "yyyy-MM-dd HH:mm:ss zzz",
                "Europe/London") == "2018-05-11 22:58:33 BST"
    assert call("TIMESTAMPTOSTRING", [B, S], ts, "yyyy-MM-dd'T'HH:mm:ss.SSSXXX") == \
        "2018-05-11T21:58:33.000Z"
    assert call("TIMESTAMPTOSTRING", [B, S, S], ts, "yyyy", None) is None
    with pytest.raises(FunctionError, match="Unknown time-zone ID: Not/AZone"):
        call("TIMESTAMPTOSTRING", [B, S, S], ts, "yyyy", "Not/AZone")


@pytest.mark.parametrize("text,pattern,ms", [
    ("2018-05-11T21:58:33Z", "yyyy-MM-dd'T'HH:mm:ssX", 1526075913000),
    ("2019-05-11T21:58:33Z", "yyyy-MM-dd'T'HH:mm:ssX", 1557611913000),
    ("2020-05-11T21:58:33Z", "yyyy-MM-dd'T'HH:mm:ssX", 1589234313000),
    ("2019-08-27T13:31:09.2+0000", "yyyy-MM-dd'T'HH:mm:ss.SX", 1566912669200),
])
def test_stringtotimestamp(text: str, pattern: str, ms: int) -> None:
    assert call("STRINGTOTIMESTAMP", [S, S], text, pattern, returns=B) == ms


def test_stringtotimestamp_zone_and_defaults() -> None:
    impl = default_registry().resolve("STRINGTOTIMESTAMP", [S, S, S]).implementation()
    # a zone argument applies when the text has none; an offset in the text wins
    assert impl("2018-05-11 14:58:33", "yyyy-MM-dd HH:mm:ss", "America/Los_Angeles") == 1526075913000
    assert impl("2018-05-11 21:58:33+00:00", "yyyy-MM-dd HH:mm:ssXXX", "America/Los_Angeles") == 1526075913000
    # missing fields default to 1970-01-01T00:00
    assert impl("10:00", "HH:mm", "UTC") == 36000000
    assert impl("2018", "yyyy", "UTC") == epoch_ms(2018, 1, 1)
    with pytest.raises(FunctionError, match="Failed to parse timestamp 'not a timestamp'"):
        impl("not a timestamp", "yyyy-MM-dd", "UTC")


def test_parse_timestamp_in_dst_gap_moves_forward() -> None:
    la = zone_of("America/Los_Angeles")
    # 02:30 does not exist on 2018-03-11 in Los Angeles: java.time gives 03:30 PDT
    assert parse_timestamp("2018-03-11 02:30", "yyyy-MM-dd HH:mm", la) == epoch_ms(2018, 3, 11, 10, 30)
    # 01:30 on 2018-11-04 happens twice: the earlier offset (PDT) is taken
    assert parse_timestamp("2018-11-04 01:30", "yyyy-MM-dd HH:mm", la) == epoch_ms(2018, 11, 4, 8, 30)


@pytest.mark.parametrize("text,ms", [("2018-05-11T21:58:33", 1526075913000),
                                     ("2019-05-11T21:58:33", 1557611913000),
                                     ("2020-05-11T21:58:33", 1589234313000)])
def test_parse_timestamp(text: str, ms: int) -> None:
    assert call("PARSE_TIMESTAMP", [S, S], text, "yyyy-MM-dd'T'HH:mm:ss", returns=TS) == ms


def test_parse_and_format_timestamp_with_zone() -> None:
    assert call("PARSE_TIMESTAMP", [S, S, S], "2018-05-11 14:58:33", "yyyy-MM-dd HH:mm:ss",
                "America/Los_Angeles") == 1526075913000
    assert call("FORMAT_TIMESTAMP", [TS, S, S], 1526075913000, "yyyy-MM-dd HH:mm:ss VV",
                "America/Los_Angeles", returns=S) == "2018-05-11 14:58:33 America/Los_Angeles"
    assert call("FORMAT_TIMESTAMP", [TS, S], 1526075913000, "HH:mm z") == "21:58 GMT"
    assert call("PARSE_TIMESTAMP", [S, S], None, "yyyy") is None


# ------------------------------------------------------------------------ pattern letters
FRI = epoch_ms(2018, 5, 11, 21, 58, 33) + 123  # a Friday


@pytest.mark.parametrize("pattern,zone,text", [
    ("EEE, d MMM yyyy HH:mm:ss Z", "UTC", "Fri, 11 May 2018 21:58:33 +0000"),
    ("EEEE MMMM dd", "UTC", "Friday May 11"),
    ("hh:mm a", "UTC", "09:58 PM"),
    ("yy D DDD", "UTC", "18 131 131"),
    ("Q QQ QQQ QQQQ", "UTC", "2 02 Q2 2nd quarter"),
    ("G GGGG", "UTC", "AD Anno Domini"),
    ("''yyyy''", "UTC", "'2018'"),
    ("yyyy[ HH]", "UTC", "2018 21"),
    ("X XX XXX x xxx", "UTC", "Z Z Z +00 +00:00"),
    ("X XX XXX x xxx", "+05:30", "+0530 +0530 +05:30 +0530 +05:30"),
    ("X XXX O OOOO ZZZZ ZZZZZ", "America/Los_Angeles", "-07 -07:00 GMT-7 GMT-07:00 GMT-07:00 -07:00"),
    ("VV", "America/Los_Angeles", "America/Los_Angeles"),
    ("S SS SSS SSSS n A", "UTC", "1 12 123 1230 123000000 79113123"),
    ("w W e c", "UTC", "19 2 6 6"),
    ("k K H h", "+02:10", "24 0 0 12"),
])
def test_pattern_letters_print_as_java_time(pattern: str, zone: str, text: str) -> None:
    assert compile_pattern(pattern).format_timestamp(FRI, zone_of(zone)) == text


def test_week_based_year_rolls_over_at_year_end() -> None:
    # Sunday 2018-12-30 starts the week that holds 2019-01-01 (en_US weeks start on Sunday)
    assert compile_pattern("YYYY-ww").format_date(epoch_day(2018, 12, 30)) == "2019-01"
    assert compile_pattern("YYYY-ww").format_date(epoch_day(2018, 12, 29)) == "2018-52"


@pytest.mark.parametrize("pattern", ["ddd", "aa", "yyyy-MM-dd b", "{yyyy}", "'open", "VVV", "]"])
def test_bad_patterns_are_errors(pattern: str) -> None:
    with pytest.raises(FunctionError):
        compile_pattern(pattern)


def test_formatting_a_date_with_time_fields_is_an_error() -> None:
    with pytest.raises(FunctionError, match="Failed to format date 10 with formatter 'HH'"):
        call("FORMAT_DATE", [D, S], 10, "HH")


def test_compiled_patterns_are_memoized() -> None:
    assert compile_pattern("yyyy-MM-dd HH") is compile_pattern("yyyy-MM-dd HH")


# ---------------------------------------------------------------------------------- zones
@pytest.mark.parametrize("zone_id,normalized", [
    ("Z", "Z"), ("+8", "+08:00"), ("-0530", "-05:30"), ("+00:00", "Z"), ("UTC", "UTC"),
    ("GMT", "GMT"), ("UTC+8", "UTC+08:00"), ("GMT-07:00", "GMT-07:00"), ("Asia/Tokyo", "Asia/Tokyo"),
])
def test_zone_ids_follow_java_zone_id_of(zone_id: str, normalized: str) -> None:
    assert zone_of(zone_id).id == normalized


@pytest.mark.parametrize("zone_id", ["PST", "+19:00", "america/los_angeles", "Nowhere/City", "+8x"])
def test_bad_zone_ids(zone_id: str) -> None:
    with pytest.raises(FunctionError):
        zone_of(zone_id)


def test_convert_tz() -> None:
    args = ("America/Los_Angeles", "America/New_York")
    assert call("CONVERT_TZ", [TS, S, S], 100, *args, returns=TS) == 10800100
    assert call("CONVERT_TZ", [TS, S, S], 1589234313000, *args) == 1589245113000
    assert call("CONVERT_TZ", [TS, S, S], None, *args) is None
    with pytest.raises(FunctionError, match="Invalid time zone"):
        call("CONVERT_TZ", [TS, S, S], 100, "Nope/Nope", "UTC")


# ----------------------------------------------------------------------------- arithmetic
def test_dateadd_and_datesub() -> None:
    assert call("DATEADD", [U, I, D], "DAYS", 10, 10, returns=D) == 20
    assert call("DATESUB", [U, I, D], "DAYS", 10, 40, returns=D) == 30
    assert call("DATESUB", [U, I, D], "DAYS", 10, 5) == -5
    # sub-day intervals truncate toward zero, as TimeUnit.MILLISECONDS.toDays does
    assert call("DATEADD", [U, I, D], "HOURS", 47, 0) == 1
    assert call("DATESUB", [U, I, D], "HOURS", 1, 0) == 0
    assert call("DATESUB", [U, I, D], "MILLISECONDS", None, 5) is None
    assert call("DATESUB", [U, I, D], "MILLISECONDS", 5, None) is None


def test_datesub_with_a_date_as_unit_is_rejected() -> None:
    with pytest.raises(KsqlStatementException,
                       match=r"Function 'datesub' does not accept parameters \(DATE, INTEGER, DATE\)"):
        default_registry().resolve("DATESUB", [D, I, D])


def test_timeadd_and_timesub_wrap_around_midnight() -> None:
    assert call("TIMEADD", [U, I, TM], "MILLISECONDS", 10, 10, returns=TM) == 20
    assert call("TIMEADD", [U, I, TM], "MILLISECONDS", 10, 86399995) == 5
    assert call("TIMEADD", [U, I, TM], "MILLISECONDS", -5, 2) == 86399997
    assert call("TIMESUB", [U, I, TM], "MILLISECONDS", 10, 20) == 10
    assert call("TIMESUB", [U, I, TM], "MILLISECONDS", 10, 5) == 86399995
    assert call("TIMEADD", [U, I, TM], "HOURS", 25, 0) == 3600000
    assert call("TIMEADD", [U, I, TM], "MILLISECONDS", None, 5) is None


def test_timestampadd_and_timestampsub() -> None:
    assert call("TIMESTAMPADD", [U, I, TS], "MILLISECONDS", -5, 2, returns=TS) == -3
    assert call("TIMESTAMPSUB", [U, I, TS], "MILLISECONDS", -5, -100) == -95
    assert call("TIMESTAMPADD", [U, I, TS], "DAYS", 1, 0) == 86400000
    assert call("TIMESTAMPADD", [U, I, TS], "MILLISECONDS", None, 5) is None


def test_epoch_conversions() -> None:
    assert call("UNIX_DATE", [D], 100, returns=I) == 100
    assert call("UNIX_DATE", [D], None) is None
    assert call("UNIX_DATE", [], returns=I) > 19000
    assert call("UNIX_TIMESTAMP", [TS], 1589234313000, returns=B) == 1589234313000
    assert call("UNIX_TIMESTAMP", [], returns=B) > 1_600_000_000_000
    assert call("FROM_UNIXTIME", [B], 100, returns=TS) == 100
    assert call("FROM_UNIXTIME", [B], None) is None
    assert call("FROM_DAYS", [I], 18993, returns=D) == 18993


def test_timestamp_text_with_hour_24_and_partial_dates() -> None:
    """Text compared with or cast to a TIMESTAMP, as ksqlDB completes it: hour 24 is the next
    day's midnight (what a window bound like '2020-02-24T24' means), a year or a month alone
    is its first day; anything else past 23 is still an error."""
    from streamsql import casts

    assert casts.parse_timestamp("2020-02-24T24") == casts.parse_timestamp("2020-02-25T00:00")
    assert casts.parse_timestamp("2020-02-24T24:00:00+01:00") == casts.parse_timestamp("2020-02-24T23:00Z")
    assert casts.parse_timestamp("2017") == casts.parse_timestamp("2017-01-01T00:00")
    assert casts.parse_timestamp("2017-11") == casts.parse_timestamp("2017-11-01T00:00")
    with pytest.raises(ValueError):
        casts.parse_timestamp("2020-02-24T24:30")
