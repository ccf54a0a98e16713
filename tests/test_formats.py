"""The key/value formats JSON, DELIMITED, KAFKA and NONE: what they decode, what they write,
and what they refuse, checked against what ksqlDB does (examples from its QTT cases)."""
from __future__ import annotations

import math
import struct
from decimal import Decimal

import orjson
import pytest

from streamsql.errors import KsqlException
from streamsql.formats.base import FormatOptions, SerdeError
from streamsql.formats.common import java_double_str
from streamsql.formats.delimited import parse_delimiter
from streamsql.formats.registry import format_names, get_format
from streamsql.schema import Column
from streamsql.types import (
    BIGINT,
    BOOLEAN,
    BYTES,
    DATE,
    DOUBLE,
    INTEGER,
    STRING,
    TIME,
    TIMESTAMP,
    ArrayType,
    DecimalType,
    Field,
    MapType,
    StructType,
)

DEFAULT = FormatOptions()
UNWRAPPED = FormatOptions(wrap_single_value=False)


def key(name, type_):
    return Column(name, type_, "KEY")


def val(name, type_):
    return Column(name, type_)


def codec(fmt, columns, is_key=False, options=DEFAULT):
    f = get_format(fmt)
    f.validate(columns, options, is_key)
    return f.codec(columns, options, is_key)


def rejects(fmt, columns, is_key=False, options=DEFAULT) -> str:
    with pytest.raises(KsqlException) as e:
        get_format(fmt).validate(columns, options, is_key)
    return str(e.value)


# -- registry -----------------------------------------------------------------------------------

def test_formats_are_found_by_name_in_any_case():
    assert get_format("json").name == "JSON"
    assert get_format("Delimited").name == "DELIMITED"
    assert get_format("KAFKA").name == "KAFKA"
    assert get_format("none").name == "NONE"
    assert set(format_names()) >= {"JSON", "DELIMITED", "KAFKA", "NONE"}


def test_unknown_format_is_refused_with_ksqldb_message():
    with pytest.raises(KsqlException, match="^Unknown format: FOO$"):
        get_format("FOO")


def test_schema_registry_formats_are_available():
    # Issue 7 made the schema-registry formats real (see tests/test_formats_avro.py etc.).
    assert get_format("avro").name == "AVRO"
    assert get_format("Avro").supports_inference


# -- JSON -----------------------------------------------------------------------------------------

STRUCT_F = StructType([Field("F1", INTEGER), Field("F2", STRING)])

JSON_ROUND_TRIPS = [
    (BOOLEAN, True, True),
    (INTEGER, -7, -7),
    (BIGINT, 998877665544332211, 998877665544332211),
    (DOUBLE, 1234.589, 1234.589),
    (DecimalType(4, 2), Decimal("10.50"), 10.5),
    (STRING, "héllo", "héllo"),
    (BYTES, b"variations", "dmFyaWF0aW9ucw=="),
    (DATE, -10, -10),
    (TIME, 86399995, 86399995),
    (TIMESTAMP, 1528224275715, 1528224275715),
    (ArrayType(BIGINT), [12, 34, None], [12, 34, None]),
    (MapType(STRING, DOUBLE), {"a": 45.67, "b": None}, {"a": 45.67, "b": None}),
    (STRUCT_F, {"F1": 1, "F2": None}, {"F1": 1, "F2": None}),
]


@pytest.mark.parametrize("type_,value,json_form", JSON_ROUND_TRIPS, ids=lambda x: str(x))
def test_json_value_round_trip_per_type(type_, value, json_form):
    c = codec("JSON", [val("ID", INTEGER), val("V", type_)])
    data = c.encode((1, value))
    assert c.to_json_form(data) == {"ID": 1, "V": json_form}
    assert c.decode(data) == (1, value)
    assert c.decode(c.from_json_form({"ID": 1, "V": json_form})) == (1, value)


@pytest.mark.parametrize("type_,value,json_form",
                         [t for t in JSON_ROUND_TRIPS if not isinstance(t[0], MapType)],
                         ids=lambda x: str(x))
def test_json_single_key_is_a_bare_value(type_, value, json_form):
    c = codec("JSON", [key("K", type_)], is_key=True)
    data = c.encode((value,))
    assert c.to_json_form(data) == json_form
    assert c.decode(data) == (value,)


def test_json_fields_match_upper_case_columns_case_insensitively():
    c = codec("JSON", [val("ID", BIGINT), val("NAME", STRING), val("@TIMESTAMP", BIGINT)])
    assert c.decode(b'{"id": 1, "Name": "a", "@timestamp": 4, "extra": 9}') == (1, "a", 4)
    assert c.decode(b'{"ID": 2}') == (2, None, None)
    assert c.decode(b"{}") == (None, None, None)


def test_json_quoted_lower_case_column_matches_only_exactly():
    c = codec("JSON", [val("id", BIGINT)])
    assert c.decode(b'{"id": 1}') == (1,)
    assert c.decode(b'{"ID": 1}') == (None,)


def test_json_struct_fields_match_case_insensitively_and_encode_declared_names():
    c = codec("JSON", [key("K", StructType([Field("F", DOUBLE)]))], is_key=True)
    row = c.decode(b'{"f": 45.67}')
    assert row == ({"F": 45.67},)
    assert orjson.loads(c.encode(row)) == {"F": 45.67}


def test_json_null_payloads_decode_to_none():
    c = codec("JSON", [val("V", INTEGER)])
    assert c.decode(None) is None
    assert c.decode(b"null") is None
    assert c.encode(None) is None


def test_json_coerces_like_ksqldb():
    c = codec("JSON", [val("I", INTEGER), val("B", BIGINT), val("D", DOUBLE), val("S", STRING),
                       val("T", TIMESTAMP)])
    assert c.decode(b'{"I": "123", "B": 1.9, "D": "2.5", "S": 10, "T": "10"}') == (
        123, 1, 2.5, "10", 10)
    # A number keeps its written text when read as a string (1.50, not 1.5).
    assert c.decode(b'{"S": 1.50}')[3] == "1.50"
    assert c.decode(b'{"S": true}')[3] == "true"
    assert c.decode(b'{"S": {"ITEMID": 6, "NAME": "Item_6"}}')[3] == '{"ITEMID":6,"NAME":"Item_6"}'
    assert c.decode(b'{"S": [1, "a", null]}')[3] == "[1, a, null]"


def test_json_map_values_and_array_items_are_coerced():
    c = codec("JSON", [val("M", MapType(STRING, STRING)), val("A", ArrayType(STRING))])
    assert c.decode(b'{"M": {"other": 11, "status": false}, "A": [1, 2]}') == (
        {"other": "11", "status": "false"}, ["1", "2"])


def test_json_map_iterates_as_the_java_hash_map_ksqldb_reads_it_into():
    # new HashMap<>(3): a 4-slot table, iterated by bucket, so REDUCE/MAP_KEYS see this order.
    c = codec("JSON", [val("M", MapType(STRING, DOUBLE))])
    [m] = c.decode(b'{"M": {"yes, thanks": 3.5, "nope": 7.3, "sure, yeah": 2.1}}')
    assert list(m) == ["yes, thanks", "sure, yeah", "nope"]


def test_json_decimal_from_numbers_and_strings_fits_the_scale():
    c = codec("JSON", [key("K", DecimalType(6, 4))], is_key=True)
    assert c.decode(b"12.365") == (Decimal("12.3650"),)
    assert c.decode(b'"12.365"') == (Decimal("12.3650"),)
    assert c.decode(b"12") == (Decimal("12.0000"),)
    big = codec("JSON", [val("V", DecimalType(33, 16))])
    assert big.decode(b'{"V": 12345678987654321.2345678987654321}') == (
        Decimal("12345678987654321.2345678987654321"),)


def test_json_decimal_that_does_not_fit_is_a_deserialization_error():
    c = codec("JSON", [val("V", DecimalType(4, 2))])
    with pytest.raises(SerdeError, match="Numeric field overflow: A field with precision 4 and "
                                         "scale 2 must round to an absolute value less than "
                                         "10\\^2. Got 100"):
        c.decode(b'{"V": 100}')
    with pytest.raises(SerdeError, match="Cannot fit decimal '1.234' into DECIMAL\\(4, 2\\) "
                                         "without rounding"):
        c.decode(b'{"V": 1.234}')


def test_json_decimal_is_written_as_a_number_with_its_scale():
    c = codec("JSON", [val("V", DecimalType(4, 2))])
    assert c.encode((Decimal("10.50"),)) == b'{"V":10.50}'
    unwrapped = codec("JSON", [val("V", DecimalType(4, 2))], options=UNWRAPPED)
    assert unwrapped.encode((Decimal("99.99"),)) == b"99.99"


def test_json_non_finite_doubles_are_written_as_strings_and_read_back():
    c = codec("JSON", [val("D", DOUBLE), val("A", ArrayType(DOUBLE))])
    data = c.encode((math.nan, [math.inf, -math.inf, 1.5]))
    assert orjson.loads(data) == {"D": "NaN", "A": ["Infinity", "-Infinity", 1.5]}
    d, a = c.decode(data)
    assert math.isnan(d) and a == [math.inf, -math.inf, 1.5]


def test_json_boolean_accepts_only_json_booleans():
    c = codec("JSON", [val("B", BOOLEAN)], options=FormatOptions(extra=(("KAFKA_TOPIC", "t"),)))
    with pytest.raises(SerdeError) as e:
        c.decode(b'{"B": "true"}')
    assert str(e.value) == ("Failed to deserialize value from topic: t. Can't convert type. "
                            "sourceType: TextNode, requiredType: BOOLEAN")


def test_json_bad_string_for_integer_reports_the_coercion():
    c = codec("JSON", [val("I", INTEGER)])
    with pytest.raises(SerdeError, match="Can't coerce string to type. targetType: INTEGER"):
        c.decode(b'{"I": "abc"}')


def test_json_malformed_payloads_are_deserialization_errors():
    c = codec("JSON", [val("I", INTEGER), val("S", STRING)])
    with pytest.raises(SerdeError):
        c.decode(b"{not json")
    with pytest.raises(SerdeError, match="sourceType: ArrayNode"):
        c.decode(b"[1, 2]")
    with pytest.raises(SerdeError, match="Value is not a valid Base64"):
        codec("JSON", [val("B", BYTES)]).decode(b'{"B": "***"}')


def test_json_unwrapped_single_value():
    c = codec("JSON", [val("V", STRUCT_F)], options=UNWRAPPED)
    assert c.decode(b'{"F1": 1, "F2": "bar"}') == ({"F1": 1, "F2": "bar"},)
    assert orjson.loads(c.encode(({"F1": 1, "F2": "bar"},))) == {"F1": 1, "F2": "bar"}
    # A null unwrapped value is written as a null payload, as ksqlDB does.
    assert c.encode((None,)) is None


def test_json_multi_column_key_is_an_object():
    c = codec("JSON", [key("K", INTEGER), key("K2", StructType([Field("F1", INTEGER)]))],
              is_key=True)
    assert c.decode(b'{"K": 1, "K2": {"F1": 2}}') == (1, {"F1": 2})
    assert orjson.loads(c.encode((None, {"F1": 2}))) == {"K": None, "K2": {"F1": 2}}


def test_json_from_json_form_writes_inputs_as_given():
    c = codec("JSON", [val("V", INTEGER)])
    assert c.from_json_form({"V": "abc"}) == b'{"V":"abc"}'
    assert c.from_json_form(None) is None
    assert c.to_json_form(None) is None


def test_json_validation_messages():
    assert rejects("JSON", [val("FOO", MapType(INTEGER, DOUBLE))]).endswith(
        "JSON only supports MAP types with STRING keys")
    message = rejects("JSON", [key("K", ArrayType(MapType(INTEGER, DOUBLE)))], is_key=True)
    assert message == (
        "Map keys, including types that contain maps, are not supported as they may lead to "
        "unexpected behavior due to inconsistent serialization. Key column name: `K`. Column "
        "type: ARRAY<MAP<INTEGER, DOUBLE>>. See https://github.com/confluentinc/ksql/issues/6621"
        " for more.")
    two = [val("F0", STRING), val("F1", STRING)]
    for wrap in (True, False):
        assert rejects("JSON", two, options=FormatOptions(wrap_single_value=wrap)) == (
            "'WRAP_SINGLE_VALUE' is only valid for single-field value schemas")
    get_format("JSON").validate([val("F0", STRING)], FormatOptions(wrap_single_value=True), False)


# -- DELIMITED ------------------------------------------------------------------------------------

def test_delimited_values_in_column_order():
    c = codec("DELIMITED", [val("ID", BIGINT), val("NAME", STRING), val("VALUE", INTEGER)])
    assert c.decode(b"0,zero,0") == (0, "zero", 0)
    assert c.encode((100, "100", 500)) == b"100,100,500"


def test_delimited_empty_fields_are_null_and_nulls_are_empty():
    c = codec("DELIMITED", [val("C1", BIGINT), val("C2", INTEGER)])
    assert c.decode(b"0,") == (0, None)
    assert c.decode(b",0") == (None, 0)
    assert c.decode(b",") == (None, None)
    assert c.encode((None, None)) == b","
    assert c.encode((None, 456)) == b",456"


def test_delimited_quotes_like_commons_csv():
    c = codec("DELIMITED", [val("A", STRING), val("B", STRING), val("C", STRING),
                            val("D", STRING)])
    row = (" \t with white space \t", " \t WITH WHITE SPACE \t", "with white space", "\t wit")
    encoded = b'" \t with white space \t"," \t WITH WHITE SPACE \t",with white space,"\t wit"'
    assert c.encode(row) == encoded
    assert c.decode(encoded) == row
    assert c.encode(("s", "S", "s", "")) == b"s,S,s,"
    assert c.encode(('say "hi"', "a,b", "x\ny", "#")) == b'"say ""hi""","a,b","x\ny","#"'
    assert c.decode(b'"say ""hi""","a,b","x\ny","#"') == ('say "hi"', "a,b", "x\ny", "#")


def test_delimited_first_field_not_starting_alphanumeric_is_quoted():
    keys = codec("DELIMITED", [key("A", INTEGER), key("B", STRING), key("C", INTEGER)],
                 is_key=True)
    assert keys.encode((-1, "a", 1)) == b'"-1",a,1'
    assert keys.encode((1, "a", -1)) == b"1,a,-1"
    bytes_codec = codec("DELIMITED", [val("A", STRING), val("B", BYTES), val("C", STRING)])
    assert bytes_codec.encode(("!", b"!", "!")) == b'"!",IQ==,"!"'


def test_delimited_decimals_keep_their_scale():
    c = codec("DELIMITED", [val("V", DecimalType(33, 16))])
    assert c.decode(b"12345678987654321.2345678987654321") == (
        Decimal("12345678987654321.2345678987654321"),)
    assert c.encode(c.decode(b".12")) == b"0.1200000000000000"
    assert c.encode(c.decode(b'"-12345.12"')) == b'"-12345.1200000000000000"'
    assert c.encode(c.decode(b"0")) == b"0.0000000000000000"
    k = codec("DELIMITED", [key("K", DecimalType(6, 4))], is_key=True)
    assert k.encode(k.decode(b'"12.0"')) == b"12.0000"


def test_delimited_doubles_print_as_java_does():
    c = codec("DELIMITED", [val("ID", BIGINT), val("A", DOUBLE), val("B", DOUBLE),
                            val("C", DOUBLE), val("D", DOUBLE)])
    assert c.encode((0, 4.9e-324, -2.2250738585072014e-308, 1.7976931348623157e308, 654.321)) \
        == b"0,4.9E-324,-2.2250738585072014E-308,1.7976931348623157E308,654.321"
    assert c.decode(b'0,1e10,"123.456",NaN,-Infinity')[1:3] == (1e10, 123.456)


@pytest.mark.parametrize("value,text", [(1.0, "1.0"), (1e7, "1.0E7"), (0.001, "0.001"),
                                        (0.0001, "1.0E-4"), (123456789.123, "1.23456789123E8"),
                                        (-0.0, "-0.0"), (math.nan, "NaN"), (1e23, "1.0E23")])
def test_java_double_formatting(value, text):
    assert java_double_str(value) == text


def test_delimited_other_primitive_types():
    c = codec("DELIMITED", [val("B", BOOLEAN), val("Y", BYTES), val("D", DATE), val("T", TIME),
                            val("TS", TIMESTAMP)])
    row = c.decode(b"TRUE,dmFyaWF0aW9ucw==,10,86399995,1528224275715")
    assert row == (True, b"variations", 10, 86399995, 1528224275715)
    assert c.encode(row) == b"true,dmFyaWF0aW9ucw==,10,86399995,1528224275715"
    assert c.decode(b"yes,,,,")[0] is False  # Boolean.parseBoolean


def test_delimited_custom_delimiters():
    tab = codec("DELIMITED", [val("A", STRING), val("B", INTEGER)],
                options=FormatOptions(delimiter="TAB"))
    assert tab.decode(b"x,y\t1") == ("x,y", 1)
    assert tab.encode(("x,y", 1)) == b"x,y\t1"
    space = codec("DELIMITED", [val("A", STRING), val("B", INTEGER)],
                  options=FormatOptions(delimiter="SPACE"))
    assert space.encode(("a b", 2)) == b'"a b" 2'
    assert space.decode(b'"a b" 2') == ("a b", 2)
    assert parse_delimiter(";") == ";"


def test_delimited_delimiter_validation_messages():
    with pytest.raises(KsqlException) as e:
        parse_delimiter("<~>")
    assert str(e.value) == ("Configuration VALUE_DELIMITER is invalid: Invalid delimiter value: "
                            "'<~>'. Delimiter must be a single character or TAB,SPACE\n"
                            "Example valid value: ';'")
    message = rejects("DELIMITED", [val("V", INTEGER)], options=FormatOptions(delimiter=""))
    assert message == ("Configuration VALUE_DELIMITER is invalid: Delimiter cannot be empty, if "
                       "you meant to have a tab or space for delimiter, please use the special "
                       "values 'TAB' or 'SPACE'\nExample valid value: ';'")


def test_delimited_validation_messages():
    assert rejects("DELIMITED", [key("K", StructType([Field("F", DOUBLE)]))], is_key=True) == (
        "Key format does not support schema.\nformat: DELIMITED\nschema: Persistence{columns="
        "[`K` STRUCT<`F` DOUBLE> KEY], features=[]}\nreason: The 'DELIMITED' format does not "
        "support type 'STRUCT', column: `K`")
    assert "The 'DELIMITED' format does not support type 'MAP'" in rejects(
        "DELIMITED", [val("FOO", MapType(INTEGER, DOUBLE))])
    assert "The 'DELIMITED' format does not support type 'ARRAY'" in rejects(
        "DELIMITED", [key("KSQL_COL_0", ArrayType(INTEGER))], is_key=True)
    assert rejects("DELIMITED", [val("FOO", INTEGER)],
                   options=FormatOptions(wrap_single_value=True)) == (
        "Format 'DELIMITED' does not support 'WRAP_SINGLE_VALUE' set to 'true'.")
    get_format("DELIMITED").validate([val("FOO", INTEGER)], UNWRAPPED, False)


def test_delimited_bad_records_are_deserialization_errors():
    c = codec("DELIMITED", [val("A", INTEGER), val("B", INTEGER)])
    with pytest.raises(SerdeError, match="expected: 2, got: 1"):
        c.decode(b"1")
    with pytest.raises(SerdeError, match='For input string: "x"'):
        c.decode(b"1,x")
    with pytest.raises(SerdeError, match="EOF reached"):
        c.decode(b'1,"2')
    assert c.decode(None) is None and c.encode(None) is None


def test_delimited_json_form_is_the_text():
    c = codec("DELIMITED", [key("K", BIGINT)], is_key=True)
    assert c.from_json_form("998877665544332211") == b"998877665544332211"
    assert c.from_json_form(10) == b"10"
    assert c.to_json_form(b'"10"') == '"10"'
    assert c.to_json_form(None) is None


# -- KAFKA ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("type_,value,raw", [
    (INTEGER, 1, b"\x00\x00\x00\x01"),
    (BIGINT, -2, b"\xff" * 7 + b"\xfe"),
    (DOUBLE, 2.2, struct.pack(">d", 2.2)),
    (STRING, "bar", b"bar"),
    (BYTES, b"\x00\x01", b"\x00\x01"),
])
def test_kafka_serializers(type_, value, raw):
    c = codec("KAFKA", [key("K", type_)], is_key=True)
    assert c.encode((value,)) == raw
    assert c.decode(raw) == (value,)
    assert c.encode((None,)) is None
    assert c.decode(None) is None


def test_kafka_json_forms_are_plain_numbers_and_strings():
    c = codec("KAFKA", [key("K", INTEGER)], is_key=True)
    assert c.from_json_form(5) == b"\x00\x00\x00\x05"
    assert c.to_json_form(b"\x00\x00\x00\x05") == 5
    d = codec("KAFKA", [val("V", DOUBLE)])
    assert d.to_json_form(d.from_json_form(1.1)) == 1.1
    s = codec("KAFKA", [key("K", STRING)], is_key=True)
    assert s.from_json_form("") == b""
    assert s.decode(b"") == ("",)
    assert s.to_json_form(b"foo") == "foo"


def test_kafka_wrong_size_is_a_deserialization_error():
    c = codec("KAFKA", [val("V", INTEGER)], options=FormatOptions(extra=(("KAFKA_TOPIC", "in"),)))
    with pytest.raises(SerdeError) as e:
        c.decode(b"\x00\x01")
    assert str(e.value) == ("Failed to deserialize value from topic: in. Size of data received "
                            "by IntegerDeserializer is not 4")


def test_kafka_without_columns_ignores_the_payload():
    c = codec("KAFKA", [], is_key=True)
    assert c.decode(b"should be ignored") == ()
    assert c.encode(()) is None


def test_kafka_validation_messages():
    assert rejects("KAFKA", [val("V0", INTEGER), val("V1", STRING)]).endswith(
        "The 'KAFKA' format only supports a single field. Got: [`V0` INTEGER, `V1` STRING]")
    assert rejects("KAFKA", [key("K", BOOLEAN)], is_key=True) == (
        "Key format does not support schema.\nformat: KAFKA\nschema: Persistence{columns="
        "[`K` BOOLEAN KEY], features=[]}\nreason: The 'KAFKA' format does not support type "
        "'BOOLEAN'")
    assert rejects("KAFKA", [key("K", DecimalType(21, 19))], is_key=True).endswith(
        "schema: Persistence{columns=[`K` DECIMAL(21, 19) KEY], features=[]}\nreason: The "
        "'KAFKA' format does not support type 'DECIMAL'")
    assert "format does not support type 'ARRAY'" in rejects("KAFKA", [val("V", ArrayType(INTEGER))])
    assert "The 'KAFKA' format does not support type 'STRUCT'" in rejects(
        "KAFKA", [key("K", StructType([Field("F1", DOUBLE)]))], is_key=True)
    assert rejects("KAFKA", [val("FOO", INTEGER)], options=FormatOptions(wrap_single_value=True)) \
        == "Format 'KAFKA' does not support 'WRAP_SINGLE_VALUE' set to 'true'."
    get_format("KAFKA").validate([val("FOO", INTEGER)], UNWRAPPED, False)
    assert rejects("KAFKA", [key("K", MapType(INTEGER, DOUBLE))], is_key=True).startswith(
        "Map keys, including types that contain maps, are not supported")


# -- NONE -----------------------------------------------------------------------------------------

def test_none_refuses_columns():
    assert rejects("NONE", [key("K", STRING)], is_key=True).endswith(
        "The 'NONE' format can only be used when no columns are defined. Got: [`K` STRING KEY]")
    assert rejects("NONE", [val("FOO", INTEGER)]).endswith(
        "The 'NONE' format can only be used when no columns are defined. Got: [`FOO` INTEGER]")


def test_none_reads_nothing_and_writes_nothing():
    c = codec("NONE", [], is_key=True)
    assert c.decode(b"\x00\x00\x00\x09") == ()
    assert c.decode(None) is None
    assert c.encode(()) is None
    assert c.to_json_form(b"x") is None


def test_a_decimal_of_38_digits_converts_to_its_type_whole() -> None:
    """DECIMAL(33, 16) and DECIMAL(38, 0) hold more digits than Python's default decimal
    context (28): a value of the type's full precision converts as it is (rounded to its
    scale half up), and widens to a wider DECIMAL."""
    from decimal import Decimal

    from streamsql.formats.connect import json_to_sql
    from streamsql.functions.conditional import _converter as widen
    from streamsql.types import DecimalType

    conv = json_to_sql(DecimalType(33, 16))
    assert conv("12345678987654321.2345678987654321") == Decimal("12345678987654321.2345678987654321")
    assert str(conv("12345678987654321.23456789876543215")) == "12345678987654321.2345678987654322"
    assert json_to_sql(DecimalType(38, 0))("9" * 38) == Decimal("9" * 38)
    to_wide = widen(DecimalType(10, 0), DecimalType(38, 10))
    assert to_wide is not None and to_wide(Decimal("1234567890")) == Decimal("1234567890.0000000000")
    assert widen(DecimalType(38, 10), DecimalType(38, 10)) is None
