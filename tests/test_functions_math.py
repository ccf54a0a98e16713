"""Math scalar functions, resolved through the default registry; expected values come from
ksqlDB's QTT cases (math.json, greatest.json, least.json, geodistance.json,
udf-implicit-cast.json)."""
from __future__ import annotations

import math
from decimal import Decimal

import pytest

from streamsql import types as t
from streamsql.errors import KsqlStatementException
from streamsql.functions import default_registry

I, L, D, S = t.INTEGER, t.BIGINT, t.DOUBLE, t.STRING
NAN = float("nan")


def fn(name: str, *arg_types: t.SqlType):
    return default_registry().resolve(name, list(arg_types)).implementation()


def rtype(name: str, *arg_types: t.SqlType) -> t.SqlType:
    return default_registry().resolve(name, list(arg_types)).return_type


def same(actual, expected) -> bool:
    """Equality that also holds for NaN == NaN and tells 0 from 0.0."""
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    return actual == expected and type(actual) is type(expected)


def check_int_long_double(name: str, rows: list[tuple]) -> None:
    """Each row is (i, l, d, expected_i, expected_l, expected_d), as math.json lays them out."""
    fi, fl, fd = fn(name, I), fn(name, L), fn(name, D)
    for i, l, d, ei, el, ed in rows:
        assert same(fi(i), ei) and same(fl(l), el) and same(fd(d), ed), (name, i, l, d)


# ------------------------------------------------------------------------- exp, sqrt, sign
def test_exp_as_math_json():
    assert rtype("EXP", I) == D
    check_int_long_double("EXP", [
        (None, None, None, None, None, None),
        (-1, -2, -3.0, 0.36787944117144233, 0.1353352832366127, 0.049787068367863944),
        (0, 0, 0.0, 1.0, 1.0, 1.0),
        (1, 2, 3.0, 2.718281828459045, 7.38905609893065, 20.085536923187668)])
    assert fn("EXP", D)(1e6) == math.inf


def test_sqrt_as_math_json():
    check_int_long_double("SQRT", [
        (None, None, None, None, None, None),
        (-1, -2, -3.0, NAN, NAN, NAN),
        (0, 0, 0.0, 0.0, 0.0, 0.0),
        (1, 2, 3.0, 1.0, 1.4142135623730951, 1.7320508075688772)])


def test_sign_as_math_json():
    assert rtype("SIGN", D) == I
    check_int_long_double("SIGN", [
        (None, None, None, None, None, None),
        (-1, -2, -3.0, -1, -1, -1), (0, 0, 0.0, 0, 0, 0), (1, 2, 3.0, 1, 1, 1)])
    assert fn("SIGN", t.DecimalType(4, 2))(Decimal("-0.01")) == -1


def test_cbrt_as_math_json():
    check_int_long_double("CBRT", [
        (None, None, None, None, None, None),
        (-8, -3, -1.0, -2.0, -1.4422495703074083, -1.0),
        (0, 0, 0.0, 0.0, 0.0, 0.0),
        (8, 3, 1.0, 2.0, 1.4422495703074083, 1.0)])


def test_log_is_natural_as_math_json():
    check_int_long_double("LOG", [
        (None, None, None, None, None, None),
        (-13, -13, -13.0, NAN, NAN, NAN),
        (0, 0, 0.0, -math.inf, -math.inf, -math.inf),
        (1, 1, 1.0, 0.0, 0.0, 0.0),
        (13, 13, 13.0, 2.5649493574615367, 2.5649493574615367, 2.5649493574615367)])
    assert fn("LN", D)(math.e) == 1.0
    assert fn("LOG", D, D)(2.0, 8.0) == 3.0
    assert math.isnan(fn("LOG", D, D)(1.0, 0.0 + 1.0))


def test_power():
    power = fn("POWER", D, D)
    assert power(2, 10) == 1024.0
    assert math.isnan(power(-8.0, 1 / 3))
    assert power(0.0, -1.0) == math.inf
    assert power(-0.0, -1.0) == -math.inf
    assert power(10.0, 400.0) == math.inf
    assert power(None, 2.0) is None


# ---------------------------------------------------------------------------------- ROUND
ROUND_ROWS = [  # v, ROUND(v), (v,0), (v,1), (v,2), (v,10), (v,-1), (v,-2) from math.json
    (1.2, 1, 1.0, 1.2, 1.2, 1.2, 0.0, 0.0),
    (1.7, 2, 2.0, 1.7, 1.7, 1.7, 0.0, 0.0),
    (1.5, 2, 2.0, 1.5, 1.5, 1.5, 0.0, 0.0),
    (1.234567, 1, 1.0, 1.2, 1.23, 1.234567, 0.0, 0.0),
    (111.0, 111, 111.0, 111.0, 111.0, 111.0, 110.0, 100.0),
    (-1.5, -1, -1.0, -1.5, -1.5, -1.5, 0.0, 0.0),
    (-1.7, -2, -2.0, -1.7, -1.7, -1.7, 0.0, 0.0),
    (12345.678, 12346, 12346.0, 12345.7, 12345.68, 12345.678, 12350.0, 12300.0),
    (-12345.678, -12346, -12346.0, -12345.7, -12345.68, -12345.678, -12350.0, -12300.0),
]


def test_round_double_as_math_json():
    assert rtype("ROUND", D) == L and rtype("ROUND", D, I) == D
    r1, r2 = fn("ROUND", D), fn("ROUND", D, I)
    for v, e0, *rest in ROUND_ROWS:
        assert same(r1(v), e0)
        assert [r2(v, p) for p in (0, 1, 2, 10, -1, -2)] == rest, v
    assert r1(None) is None and r2(None, 1) is None
    assert r1(0.49999999999999994) == 0  # Math.round, not floor(x + 0.5)


def test_round_large_decimal_as_math_json():
    dec = t.DecimalType(33, 16)
    assert rtype("ROUND", dec) == t.DecimalType(17, 0)
    assert rtype("ROUND", dec, I) == dec
    v = Decimal("12345678987654321.2345678987654321")
    assert str(fn("ROUND", dec)(v)) == "12345678987654321"
    r2 = fn("ROUND", dec, I)
    assert [str(r2(v, p)) for p in (0, 1, 2, 10, -1, -2)] == [
        "12345678987654321.0000000000000000", "12345678987654321.2000000000000000",
        "12345678987654321.2300000000000000", "12345678987654321.2345678988000000",
        "12345678987654320.0000000000000000", "12345678987654300.0000000000000000"]


def test_round_decimal_ties_go_up():
    dec = t.DecimalType(3, 1)
    assert fn("ROUND", dec)(Decimal("-1.5")) == Decimal("-1")
    assert fn("ROUND", dec)(Decimal("1.5")) == Decimal("2")
    assert str(fn("ROUND", dec, I)(Decimal("-2.5"), 0)) == "-2.0"


def test_round_integers():
    assert rtype("ROUND", I) == L and fn("ROUND", I)(5) == 5
    assert fn("ROUND", I, I)(111, -1) == Decimal(110)


# ---------------------------------------------------------------------------------- TRUNC
def test_trunc_double_and_decimal_as_math_json():
    t1, t2 = fn("TRUNC", D), fn("TRUNC", D, I)
    dec = t.DecimalType(12, 7)
    d1, d2 = fn("TRUNC", dec), fn("TRUNC", dec, I)
    rows = [(1.7, 1, [1.0, 1.7, 1.7, 1.7, 0.0, 0.0]),
            (-1.7, -1, [-1.0, -1.7, -1.7, -1.7, 0.0, 0.0]),
            (12345.678, 12345, [12345.0, 12345.6, 12345.67, 12345.678, 12340.0, 12300.0]),
            (-12345.678, -12345, [-12345.0, -12345.6, -12345.67, -12345.678, -12340.0, -12300.0])]
    for v, whole, places in rows:
        assert same(t1(v), whole)
        assert [t2(v, p) for p in (0, 1, 2, 10, -1, -2)] == places
        dv = Decimal(str(v)).quantize(Decimal("1E-7"))
        assert d1(dv) == whole
        assert [d2(dv, p) for p in (0, 1, 2, 10, -1, -2)] == [Decimal(str(p)) for p in places]
    assert rtype("TRUNC", D) == L
    assert rtype("TRUNC", dec, I) == dec


# ------------------------------------------------------------------------ ABS, CEIL, FLOOR
def test_abs_keeps_the_argument_type():
    for ty in (I, L, D):
        assert rtype("ABS", ty) == ty
    dec = t.DecimalType(38, 10)
    assert rtype("ABS", dec) == dec
    big = Decimal("-1234567890123456789012345678.0123456789")
    assert str(fn("ABS", dec)(big)) == "1234567890123456789012345678.0123456789"  # 38 digits kept
    assert fn("ABS", I)(-3) == 3 and fn("ABS", D)(-2.5) == 2.5
    assert fn("ABS", I)(t.INT_MIN) == t.INT_MIN  # Java overflow
    assert fn("ABS", I)(None) is None


def test_ceil_and_floor():
    assert rtype("CEIL", D) == D and rtype("FLOOR", I) == I
    assert same(fn("CEIL", D)(1.2), 2.0) and same(fn("FLOOR", D)(-1.2), -2.0)
    assert math.copysign(1.0, fn("CEIL", D)(-0.5)) == -1.0  # Java gives -0.0
    assert fn("CEIL", I)(7) == 7 and fn("FLOOR", L)(None) is None
    # As used in reduce-map.json: ceil(2.1 * 3.2) etc. come back as DOUBLE.
    assert same(fn("CEIL", D)(3.5 * 3.2), 12.0)
    dec = t.DecimalType(5, 2)
    assert rtype("CEIL", dec) == dec
    assert str(fn("CEIL", dec)(Decimal("-1.25"))) == "-1.00"
    assert str(fn("FLOOR", dec)(Decimal("-1.25"))) == "-2.00"


# --------------------------------------------------------------------------- trigonometry
def rounded(name: str, ty: t.SqlType, *args):
    value = fn(name, *([ty] * len(args)))(*args)
    return None if value is None else round(value, 13)


def test_acos_asin_as_math_json():
    assert [rounded("ACOS", I, v) for v in (-1, 0, 1)] == \
        [3.1415926535898, 1.5707963267949, 0.0]
    assert [rounded("ACOS", D, v) for v in (-0.43, 0.0, 0.43)] == \
        [2.0152891037307, 1.5707963267949, 1.1263035498591]
    assert all(math.isnan(fn("ASIN", ty)(v)) for ty, v in ((I, -2), (L, 6), (D, 1.1)))
    assert fn("ASIN", D)(None) is None


def test_atan2_as_math_json():
    rows = [(-2, -3, -2.5535900500422), (-2, 3, -0.5880026035476), (-2, 0, -1.5707963267949),
            (2, -3, 2.5535900500422), (0, -3, 3.1415926535898), (0, 0, 0.0)]
    for y, x, expected in rows:
        assert rounded("ATAN2", I, y, x) == expected
    assert rounded("ATAN2", D, -1.1, -0.24) == -1.7856117271966
    assert fn("ATAN2", I, I)(None, 1) is None


def test_sin_sinh_tanh_as_math_json():
    assert [rounded("SIN", I, v) for v in (-7, -6, 0, 6, 7)] == \
        [-0.6569865987188, 0.2794154981989, 0.0, -0.2794154981989, 0.6569865987188]
    assert [rounded("SIN", D, v) for v in (-9.1, -0.43, 0.43, 9.1)] == \
        [-0.3190983623494, -0.4168708024292, 0.4168708024292, 0.3190983623494]
    assert [rounded("SINH", D, v) for v in (-9.1, -0.43, 9.1)] == \
        [-4477.64629590835, -0.4433742144125, 4477.64629590835]
    assert rounded("SINH", I, 7) == 548.3161232732465
    assert [rounded("TANH", D, v) for v in (-9.1, -0.43, 0.43)] == \
        [-0.9999999750615, -0.4053213086895, 0.4053213086895]
    assert rounded("TANH", I, -6) == -0.9999877116508


def test_other_trigonometry_follows_java():
    assert fn("PI")() == math.pi
    assert fn("DEGREES", D)(math.pi) == 180.0
    assert fn("RADIANS", D)(180.0) == math.pi
    assert fn("COT", D)(0.0) == math.inf
    assert math.isnan(fn("SIN", D)(math.inf))
    assert fn("COSH", D)(1000.0) == math.inf and fn("SINH", D)(-1000.0) == -math.inf
    assert round(fn("COS", D)(0.0), 13) == 1.0 and round(fn("TAN", D)(0.0), 13) == 0.0
    assert round(fn("ATAN", D)(1.0), 13) == round(math.pi / 4, 13)


def test_random():
    values = [fn("RANDOM")() for _ in range(20)]
    assert all(0.0 <= v < 1.0 for v in values) and len(set(values)) > 1


# ------------------------------------------------------------------------- GREATEST, LEAST
def test_greatest_and_least_same_type():
    args = [I, I, I, t.NULL, I]
    assert rtype("GREATEST", *args) == I and rtype("LEAST", *args) == I
    assert fn("GREATEST", *args)(2147483647, -2147483648, None, None, 5) == 2147483647
    assert fn("LEAST", *args)(2147483647, -2147483648, None, None, 5) == -2147483648
    assert fn("LEAST", L, L, L, t.NULL)(2**63 - 1, -2**63, None, None) == -2**63
    assert fn("LEAST", D, D, D, t.NULL)(50000.555, -99999.555, None, None) == -99999.555


def test_greatest_widens_mixed_numbers_to_double():
    args = [I, L, t.DecimalType(30, 18), D, t.NULL]
    assert rtype("GREATEST", *args) == D
    greatest, least = fn("GREATEST", *args), fn("LEAST", *args)
    assert greatest(-1, 1000000000000, Decimal("99999.99999"), None, None) == 1000000000000.0
    assert greatest(500000, 1, Decimal("99999.99999"), None, None) == 500000.0
    assert isinstance(greatest(500000, 1, Decimal("99999.99999"), None, None), float)
    assert least(-500000, -1, Decimal("-99999.99999"), None, None) == -500000.0


def test_greatest_widens_decimals():
    args = [t.DecimalType(9, 2), t.DecimalType(7, 6)]
    assert rtype("GREATEST", *args) == t.DecimalType(13, 6)
    assert fn("GREATEST", *args)(Decimal("1234567.89"), Decimal("0.123456")) == \
        Decimal("1234567.890000")


def test_greatest_least_strings_bytes_dates_times():
    args = [S, S, S, S, t.NULL, t.NULL, S]
    greatest, least = fn("GREATEST", *args), fn("LEAST", *args)
    assert greatest("apple", "banana", "aardvark", None, None, None, "hello") == "hello"
    assert greatest(None, None, None, None, None, None, "hello") == "hello"
    assert greatest("!", "zebra", "aardvark", None, None, None, "hello") == "zebra"
    assert least("apple", "banana", "aardvark", None, None, None, "hello") == "aardvark"
    assert least("!", "Zebra", "aardvark", None, None, None, "hello") == "!"
    b = t.BYTES
    assert fn("LEAST", b, b, b)(b"apple", b"banana", b"aardvark") == b"aardvark"
    assert fn("LEAST", b, b)(b"\x80", b"\x01") == b"\x80"  # Java compares signed bytes
    date_args = [t.DATE] * 4 + [t.NULL, t.NULL, S]
    assert rtype("LEAST", *date_args) == t.DATE
    assert fn("LEAST", *date_args)(19071, 18824, -5883, None, None, None, "2022-06-14") == -5883
    assert fn("LEAST", *date_args)(None, None, None, None, None, None, "2022-06-14") == 19157
    time_args = [t.TIME] * 4 + [t.NULL, t.NULL, S]
    greatest = fn("GREATEST", *time_args)
    assert greatest(33359999, 23361230, 10, None, None, None, "09:16:00") == 33360000
    assert greatest(32560000, 33370000, 33360001, None, None, None, "09:16:00") == 33370000
    assert fn("LEAST", *time_args)(33359999, 23361230, 10, None, None, None, "09:16:00") == 10


@pytest.mark.parametrize("name", ["GREATEST", "LEAST"])
def test_greatest_least_resolution_errors(name: str):
    def message(args: list[t.SqlType]) -> str:
        with pytest.raises(KsqlStatementException) as info:
            default_registry().resolve(name, args)
        return str(info.value)

    lower = name.lower()
    assert message([I, L]) == (f"Function '{lower}' cannot be resolved due to ambiguous method "
                               "parameters (INTEGER, BIGINT).")
    assert message([I, L, t.DecimalType(50, 30)]).startswith(
        f"Function '{lower}' cannot be resolved due to ambiguous method parameters "
        "(INTEGER, BIGINT, DECIMAL(50, 30)).")
    assert message([t.NULL] * 4).startswith(
        f"Function '{lower}' cannot be resolved due to ambiguous method parameters "
        "(null, null, null, null).")
    assert message([]).startswith(f"Function '{lower}' does not accept parameters ().")
    assert message([S, I]).startswith(f"Function '{lower}' does not accept parameters "
                                      "(STRING, INTEGER).")


# ---------------------------------------------------------------------------- GEO_DISTANCE
def test_geo_distance_as_geodistance_json():
    geo = fn("GEO_DISTANCE", D, D, D, D, S)
    assert rtype("GEO_DISTANCE", D, D, D, D) == D
    sf_london, london_cape, cape_sydney = ((37.4439, -122.1663, 51.5257, -0.1122),
                                           (51.5257, -0.1122, -33.9323, 18.4197),
                                           (-33.9323, 18.4197, -33.8666, 151.1))
    assert geo(*sf_london, None) == 8634.659796579544
    assert geo(*sf_london, "KM") == 8634.659796579544
    assert geo(*sf_london, "MI") == 5365.659729188262
    assert geo(*london_cape, "KM") == 9673.40421197142
    assert geo(*london_cape, "MI") == 6011.1453892944355
    assert geo(*cape_sydney, None) == 11005.23304055582
    assert geo(*cape_sydney, "MI") == 6838.756491533589
    with pytest.raises(Exception):
        geo(*sf_london, "parsecs")
    with pytest.raises(Exception):
        geo(91.0, 0.0, 0.0, 0.0, None)


def test_geo_distance_implicit_casts_as_udf_implicit_cast_json():
    for ty in (I, L):
        geo = fn("GEO_DISTANCE", D, D, ty, ty)
        assert geo(37.4439, -122.1663, 51, 0) == 8682.459061368269


# ------------------------------------------------------------------------- GENERATE_SERIES
def test_generate_series():
    assert rtype("GENERATE_SERIES", I, I) == t.ArrayType(I)
    assert rtype("GENERATE_SERIES", L, L, I) == t.ArrayType(L)
    assert fn("GENERATE_SERIES", I, I)(1, 4) == [1, 2, 3, 4]
    assert fn("GENERATE_SERIES", I, I)(3, 1) == [3, 2, 1]
    assert fn("GENERATE_SERIES", I, I, I)(0, 9, 3) == [0, 3, 6, 9]
    assert fn("GENERATE_SERIES", I, I, I)(5, -5, -5) == [5, 0, -5]
    for step in (0, -1):
        with pytest.raises(Exception):
            fn("GENERATE_SERIES", I, I, I)(1, 5, step)


def test_a_huge_series_fails_instead_of_taking_the_memory() -> None:
    from streamsql.functions.math import generate_series

    with pytest.raises(ValueError, match="over the limit"):
        generate_series(0, 2**62)
    assert generate_series(1, 3) == [1, 2, 3]
