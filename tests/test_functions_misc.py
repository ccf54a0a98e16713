"""Conditional, BYTES, URL and JSON scalar functions, resolved through the default registry;
expected values come from ksqlDB's QTT cases (null.json, as_value.json, bytes-and-strings.json,
url.json, extract-json-field.json, json_*.json, is_json_string.json, to_json_string.json)."""
from __future__ import annotations

import base64
from decimal import Decimal

import pytest

from streamsql import types as t
from streamsql.errors import KsqlStatementException
from streamsql.functions import default_registry

I, L, D, S, B = t.INTEGER, t.BIGINT, t.DOUBLE, t.STRING, t.BYTES


def fn(name: str, *arg_types: t.SqlType):
    return default_registry().resolve(name, list(arg_types)).implementation()


def rtype(name: str, *arg_types: t.SqlType) -> t.SqlType:
    return default_registry().resolve(name, list(arg_types)).return_type


def b64(text: str) -> bytes:
    return base64.b64decode(text)


# ----------------------------------------------------------------------------- conditional
def test_coalesce_as_null_json():
    assert rtype("COALESCE", I, I, I, I) == I
    assert fn("COALESCE", I, I, I, I)(1, 2, 1, 2) == 1
    assert fn("COALESCE", I, I, I, I)(None, None, None, None) is None
    assert fn("COALESCE", S, S)(None, "x") == "x"
    arr = t.ArrayType(I)
    assert rtype("COALESCE", arr, arr) == arr
    assert fn("COALESCE", arr, arr)(None, [10, 20]) == [10, 20]


def test_coalesce_without_arguments_is_rejected_as_ksqldb_words_it():
    with pytest.raises(KsqlStatementException, match=r"Function 'COALESCE' does not accept parameters \(\)"):
        default_registry().resolve("COALESCE", [])


def test_coalesce_widens_numbers():
    assert rtype("COALESCE", I, D) == D
    assert fn("COALESCE", I, D)(3, 2.5) == 3.0 and isinstance(fn("COALESCE", I, D)(3, 2.5), float)
    assert rtype("COALESCE", t.NULL, S) == S


def test_ifnull_as_null_json():
    assert rtype("IFNULL", I, I) == I
    assert fn("IFNULL", I, I)(None, 10) == 10
    assert fn("IFNULL", I, I)(1, 10) == 1
    assert fn("IFNULL", S, S)(None, "x") == "x"
    assert fn("IFNULL", I, I)(None, -1) == -1
    assert fn("IFNULL", I, I)(None, None) is None


def test_nullif_as_null_json():
    nullif = fn("NULLIF", I, I)
    assert [nullif(k, 10) for k in (1, None, 10)] == [1, None, None]
    assert fn("NULLIF", S, S)("x", "x") is None and fn("NULLIF", S, S)("X", "x") == "X"
    arr = t.ArrayType(I)
    assert fn("NULLIF", arr, arr)([1, 2, 3], [1, 2, 3]) is None
    assert fn("NULLIF", arr, arr)([], [1, 2, 3]) == []


def test_as_value_is_identity():
    assert rtype("AS_VALUE", I) == I
    assert fn("AS_VALUE", I)(1) == 1 and fn("AS_VALUE", S)(None) is None


# ----------------------------------------------------------------------------------- bytes
def test_to_and_from_bytes_as_bytes_and_strings_json():
    from_bytes, to_bytes = fn("FROM_BYTES", B, S), fn("TO_BYTES", S, S)
    assert rtype("FROM_BYTES", B, S) == S and rtype("TO_BYTES", S, S) == B
    assert from_bytes(b64("GrI="), "hex") == "1AB2"
    assert to_bytes("1aB2", "hex") == b64("GrI=")
    assert from_bytes(to_bytes("1aB2", "hex"), "hex") == "1AB2"
    assert from_bytes(b64("IQ=="), "ascii") == "!"
    assert from_bytes(b64("IQ=="), "base64") == "IQ=="
    assert to_bytes("Iw==", "base64") == b64("Iw==")
    assert to_bytes(".", "utf8") == b"."
    assert to_bytes("é", "ascii") == b"?"
    assert from_bytes(b"\xff", "utf8") == "\ufffd"
    assert to_bytes(None, "hex") is None
    for bad in (("abc", "hex"), ("x", "klingon"), ("a!b=", "base64")):
        with pytest.raises(Exception):
            to_bytes(*bad)


def test_numbers_from_bytes_as_bytes_and_strings_json():
    assert rtype("INT_FROM_BYTES", B, S) == I
    assert fn("INT_FROM_BYTES", B, S)(b64("5QcAAA=="), "LITTLE_ENDIAN") == 2021
    assert fn("BIGINT_FROM_BYTES", B, S)(b64("APIFKgEAAAA="), "LITTLE_ENDIAN") == 5000000000
    assert fn("DOUBLE_FROM_BYTES", B, S)(b64("gvXJm/2mgEA="), "LITTLE_ENDIAN") == 532.8738323
    assert fn("INT_FROM_BYTES", B)(b"\x00\x00\x07\xe5") == 2021
    with pytest.raises(Exception, match="Number of bytes must be equal to 4"):
        fn("INT_FROM_BYTES", B)(b"\x00\x01")


# ------------------------------------------------------------------------------------- url
def test_url_encode_and_decode_param_as_url_json():
    enc, dec = fn("URL_ENCODE_PARAM", S), fn("URL_DECODE_PARAM", S)
    pairs = [("?foo $bar", "%3Ffoo+%24bar"), ("hello&world", "hello%26world"), ("nothing", "nothing")]
    for plain, encoded in pairs:
        assert enc(plain) == encoded and dec(encoded) == plain
    assert enc("a~b*c") == "a%7Eb*c"  # java.net.URLEncoder
    with pytest.raises(Exception):
        dec("%zz")


def test_url_extract_as_url_json():
    frag, host, path = fn("URL_EXTRACT_FRAGMENT", S), fn("URL_EXTRACT_HOST", S), fn("URL_EXTRACT_PATH", S)
    port, proto = fn("URL_EXTRACT_PORT", S), fn("URL_EXTRACT_PROTOCOL", S)
    assert rtype("URL_EXTRACT_PORT", S) == I
    assert frag("http://www.test.com/?query#fragment") == "fragment"
    assert frag("http://www.nofragment.com") is None
    assert host("http://www.test.com/?query#fragment") == "www.test.com"
    assert host("http://test@confluent.io:8080") == "confluent.io"
    assert path("http://www.test.com?query#fragment") == ""
    assert path("http://www.test.com/path?query") == "/path"
    assert path("http://test@confluent.io:8080/nested/path?query&jobs") == "/nested/path"
    assert port("http://test@confluent.io") is None
    assert port("http://test@confluent.io:8080/nested/path?query&jobs") == 8080
    assert proto("http://test@confluent.io") == "http"
    assert proto("https://test@confluent.io:8080/nested/path?query&jobs") == "https"
    assert proto("www.confluent.io") is None


def test_url_query_parameters_and_java_uri_rules():
    query, param = fn("URL_EXTRACT_QUERY", S), fn("URL_EXTRACT_PARAMETER", S, S)
    url = "http://host.com/p%20q?a=1&b=x%26y&flag#frag"
    assert query(url) == "a=1&b=x&y&flag"
    assert param(url, "a") == "1" and param(url, "flag") == "" and param(url, "zzz") is None
    assert fn("URL_EXTRACT_PATH", S)(url) == "/p q"
    # Not a server name: java.net.URI keeps the URI but has no host.
    assert fn("URL_EXTRACT_HOST", S)("http://under_score.com/x") is None
    assert fn("URL_EXTRACT_HOST", S)("http://[::1]:80/x") == "[::1]"
    for bad in ("http://a b.com", "http://host/%zz", "://x"):
        with pytest.raises(Exception):
            fn("URL_EXTRACT_HOST", S)(bad)


# ------------------------------------------------------------------------------------ json
def test_extractjsonfield_as_extract_json_field_json():
    ex = fn("EXTRACTJSONFIELD", S, S)
    doc = '{"name": "cdc", "version": "1", "@type": "UDF"}'
    assert (ex(doc, "$.name"), ex(doc, "$.version"), ex(doc, "$.@type")) == ("cdc", "1", "UDF")
    # Trailing garbage after the document is ignored, as Jackson does.
    assert ex('{"name": "cdd", "version": "2", "@type": "VAL"}}', "$.@type") == "VAL"
    assert ex('{"nested": "nest0"}', "$.nested") == "nest0"
    assert ex(None, "$.nested") is None
    arrays = ['{"array": [1, 2, 3]}', '{"array": [1.23450]}']
    assert [ex(arrays[0], p) for p in ("$.array[-1]", "$.array[0]", "$.array[1]")] == [None, "1", "2"]
    assert [ex(arrays[1], p) for p in ("$.array[-1]", "$.array[0]", "$.array[1]")] == [None, "1.23450", None]


def test_extractjsonfield_renders_nested_values_compactly():
    ex = fn("EXTRACTJSONFIELD", S, S)
    item = '{"ITEMID": 6, "CATEGORY": {"ID": 2, "NAME": "Food"}, "NAME": "Item_6"}'
    assert ex(item, "$.ITEMID") == "6"
    assert ex(item, "$.CATEGORY") == '{"ID":2,"NAME":"Food"}'
    assert ex('{"a b": [1, {"c": "x\\u0001"}]}', "$['a b'][1]") == '{"c":"x\\u0001"}'
    assert ex('{"a": 1}', "$.a.b") is None
    with pytest.raises(Exception):
        ex("not json", "$.a")


def test_is_json_string_as_is_json_string_json():
    check = fn("IS_JSON_STRING", S)
    assert rtype("IS_JSON_STRING", S) == t.BOOLEAN
    results = [check(v) for v in ("1", "abc", "[1, 2, 3]", '"abc"', "", None)]
    assert results == [True, False, True, True, False, False]
    assert check("NaN") is False and check("01") is False


def test_json_array_contains_as_json_array_contains_json():
    contains = fn("JSON_ARRAY_CONTAINS", S, S)
    docs = ['["Red", "Green"]', '["Black"]', '["Pink", "Yellow", "Pink"]', '["White", "Pink"]',
            '["Pink", null]']
    assert [contains(d, "Pink") for d in docs] == [False, False, True, True, True]
    assert contains("not json", "Pink") is False
    assert contains('{"a": "Pink"}', "Pink") is False
    assert fn("JSON_ARRAY_CONTAINS", S, I)("[1, 2.0]", 1) is True
    assert fn("JSON_ARRAY_CONTAINS", S, I)("[1.0]", 1) is False  # JSON types must agree
    assert fn("JSON_ARRAY_CONTAINS", S, D)("[1.0]", 1.0) is True
    assert fn("JSON_ARRAY_CONTAINS", S, t.BOOLEAN)("[1, true]", True) is True


def test_json_concat_as_json_concat_json():
    concat = fn("JSON_CONCAT", S, S)
    rows = [('{"a": 1}', '{"b": 2}', '{"a":1,"b":2}'), ("{}", "{}", "{}"),
            ('{"a": {"5": 6}}', '{"a": {"3": 4}}', '{"a":{"3":4}}'),
            ("[1, 2]", "[3, 4]", "[1,2,3,4]"), ("null", "null", "[null,null]"),
            ("[1, 2]", '{"a": 1}', '[1,2,{"a":1}]'), ("[]", "[]", "[]"),
            ("[1, [2]]", "[[[3]], [[[4]]]]", "[1,[2],[[3]],[[[4]]]]"),
            ("1", "", None), ("", "1", None), ("", "", None), (None, None, None), (None, "", None)]
    for left, right, expected in rows:
        assert concat(left, right) == expected, (left, right)


def test_json_keys_records_items_and_length():
    keys = fn("JSON_KEYS", S)
    assert keys('{"Red": 3, "Green": 5}') == ["Red", "Green"]
    assert keys("{}") == [] and keys("") is None and keys(None) is None and keys("[1]") is None
    assert rtype("JSON_RECORDS", S) == t.MapType(S, S)
    assert fn("JSON_RECORDS", S)('{"a": "abc", "b": {"c": "a"}, "d": 1}') == \
        {"a": '"abc"', "b": '{"c":"a"}', "d": "1"}
    assert fn("JSON_ITEMS", S)('[{"a": 1}, "x", 2.50]') == ['{"a":1}', '"x"', "2.50"]
    length = fn("JSON_ARRAY_LENGTH", S)
    assert (length("[1, 2, 3]"), length("{}"), length(None)) == (3, None, None)


def test_to_json_string_as_to_json_string_json():
    cases = [(I, 1, "1"), (S, "abc", '"abc"'), (t.BOOLEAN, True, "true"), (L, 123, "123"),
             (D, 123.456, "123.456"), (t.TIME, 60220000, '"16:43:40"'),
             (t.DATE, 1000, '"1972-09-27"'), (t.TIMESTAMP, 60220000000, '"1971-11-28T23:46:40.000"'),
             (t.ArrayType(I), [1, 2, 3], "[1,2,3]"),
             (t.StructType([t.Field("ID", I), t.Field("NAME", S)]), {"ID": 1, "NAME": "Alice"},
              '{"ID":1,"NAME":"Alice"}'),
             (t.MapType(S, I), {"id": 1}, '{"id":1}'),
             (t.MapType(S, t.ArrayType(I)), {"id": [1, 2, 3]}, '{"id":[1,2,3]}')]
    for type_, value, expected in cases:
        render = fn("TO_JSON_STRING", type_)
        assert rtype("TO_JSON_STRING", type_) == S
        assert render(value) == expected, type_
        assert render(None) == "null"


def test_to_json_string_java_formatting():
    assert fn("TO_JSON_STRING", D)(1e10) == "1.0E10"
    assert fn("TO_JSON_STRING", D)(0.0001) == "1.0E-4"
    assert fn("TO_JSON_STRING", D)(float("nan")) == '"NaN"'
    assert fn("TO_JSON_STRING", t.DecimalType(4, 2))(Decimal("1.20")) == "1.20"
    assert fn("TO_JSON_STRING", B)(b"no") == '"bm8="'
    assert fn("TO_JSON_STRING", S)('a"\\\x1f\u00e9') == '"a\\"\\\\\\u001F\u00e9"'
    assert fn("TO_JSON_STRING", t.ArrayType(S))(["x", None]) == '["x",null]'
