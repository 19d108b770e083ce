"""What WordPress itself does around a WooCommerce REST request, for the fake WooCommerce site.

Errors (``WP_Error`` as ``{"code", "message", "data": {"status", ...}}``), argument checking as
``WP_REST_Request::has_valid_params`` and ``rest_validate_value_from_schema`` do it (WordPress
6.x, wp-includes/rest-api.php), ``wp_json_encode`` output, ``_links``, and the three ways
WordPress and WooCommerce read a date: ``wc_rest_prepare_date_response`` (out),
``WC_Data::set_date_prop`` (in) and ``WP_Date_Query`` (query filters).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

Arg = dict[str, Any]  # one argument's JSON schema, as register_rest_route takes it

NO_ROUTE_MESSAGE = "No route was found matching the URL and request method."
WP_TYPES = ("array", "object", "string", "number", "integer", "boolean", "null")
# rest_get_best_type_for_value tries the allowed types in this order.
BEST_TYPE_ORDER = ("array", "object", "integer", "number", "boolean", "string", "null")
NUMERIC = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")  # PHP is_numeric
# rest_parse_date's pattern: what a 'date-time' format argument must look like.
REST_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+|,\d+)?(?:[Zz]|[+-]\d{2}(?::\d{2})?)?$"
)
# WC_Data::set_date_prop honours an offset only in exactly this shape; anything else is site time.
WC_DATE_WITH_ZONE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(Z|[+-]\d{2}:\d{2})$")
EMAIL = re.compile(r"^[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]+@[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)+$")  # is_email, roughly


class RestError(Exception):
    """A WP_Error on its way out as a REST response."""

    def __init__(self, code: str, message: str, status: int, **data: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.data = data

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": {"status": self.status, **self.data}}


def no_route() -> RestError:
    return RestError("rest_no_route", NO_ROUTE_MESSAGE, 404)


def wp_json(data: Any) -> bytes:
    """wp_json_encode: json_encode with no flags, so '/' is escaped and non-ASCII is \\u-escaped."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode()


def sprintf_list(items: list[str]) -> str:
    """wp_sprintf's %l: "a", "a and b", "a, b, and c"."""
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + ", and " + items[-1]


# --- argument checking (rest_validate_value_from_schema) ------------------------------------


class ArgError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def is_numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and bool(NUMERIC.match(value))


def is_integer(value: Any) -> bool:
    return is_numeric(value) and float(value) == round(float(value))


def is_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, str):
        return value.lower() in ("false", "true", "0", "1")
    return isinstance(value, int) and value in (0, 1)


def to_boolean(value: Any) -> bool:
    """rest_sanitize_boolean."""
    if isinstance(value, str):
        return value.lower() not in ("false", "0", "")
    return bool(value)


def parse_list(value: Any) -> list[Any]:
    """wp_parse_list."""
    if isinstance(value, list):
        return value
    if isinstance(value, bool):
        value = "1" if value else ""
    return [part for part in re.split(r"[\s,]+", str(value)) if part]


def _is_array(value: Any) -> bool:
    return isinstance(value, list) or (value is not None and not isinstance(value, dict))


def _is_object(value: Any) -> bool:
    # PHP arrays are objects too, and '' stands for an empty one (rest_is_object).
    return isinstance(value, dict | list) or value == ""


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _is_null(value: Any) -> bool:
    return value is None


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "array": _is_array,
    "object": _is_object,
    "integer": is_integer,
    "number": is_numeric,
    "boolean": is_boolean,
    "string": _is_string,
    "null": _is_null,
}


def _enum_matches(value: Any, option: Any, kind: str) -> bool:
    if kind in ("integer", "number") and is_numeric(value) and is_numeric(option):
        return float(value) == float(option)
    if kind == "boolean" and is_boolean(value):
        return to_boolean(value) is bool(option)
    return bool(value == option)


def check_value(value: Any, schema: Arg, name: str) -> None:
    """Raise ArgError as rest_validate_value_from_schema would return a WP_Error."""
    kind = schema.get("type")
    if isinstance(kind, list):
        matching = [t for t in BEST_TYPE_ORDER if t in kind and _TYPE_CHECKS[t](value)]
        if not matching:
            raise ArgError("rest_invalid_type", f"{name} is not of type {','.join(kind)}.")
        kind = matching[0]
    if kind in _TYPE_CHECKS and not _TYPE_CHECKS[kind](value):
        raise ArgError("rest_invalid_type", f"{name} is not of type {kind}.")
    if kind == "array":
        for index, item in enumerate(parse_list(value)):
            if "items" in schema:
                check_value(item, schema["items"], f"{name}[{index}]")
    if kind == "object" and isinstance(value, dict):
        for key, sub_schema in schema.get("properties", {}).items():
            if key in value:
                check_value(value[key], sub_schema, f"{name}[{key}]")
    if kind in ("integer", "number"):
        _check_bounds(float(value), schema, name)
    options = schema.get("enum")
    if options and not any(_enum_matches(value, option, kind or "") for option in options):
        if len(options) == 1:
            raise ArgError("rest_not_in_enum", f"{name} is not {options[0]}.")
        raise ArgError("rest_not_in_enum", f"{name} is not one of {sprintf_list([str(o) for o in options])}.")
    form = schema.get("format")
    if form and (kind is None or kind == "string" or kind not in WP_TYPES):
        if form == "date-time" and not REST_DATE.match(str(value)):
            raise ArgError("rest_invalid_date", "Invalid date.")
        if form == "email" and (len(str(value)) < 6 or not EMAIL.match(str(value))):
            raise ArgError("rest_invalid_email", "Invalid email address.")


def _check_bounds(value: float, schema: Arg, name: str) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None and not low <= value <= high:
        raise ArgError(
            "rest_out_of_bounds", f"{name} must be between {low} (inclusive) and {high} (inclusive)"
        )
    if low is not None and high is None and value < low:
        raise ArgError("rest_out_of_bounds", f"{name} must be greater than or equal to {low}")
    if high is not None and low is None and value > high:
        raise ArgError("rest_out_of_bounds", f"{name} must be less than or equal to {high}")


def check_args(args: Mapping[str, Arg], params: Mapping[str, Any]) -> None:
    """WP_REST_Request::has_valid_params: required first, then every present argument."""
    missing = [key for key, arg in args.items() if arg.get("required") and params.get(key) is None]
    if missing:
        raise RestError(
            "rest_missing_callback_param", f"Missing parameter(s): {', '.join(missing)}", 400, params=missing
        )
    invalid: dict[str, str] = {}
    details: dict[str, Any] = {}
    for key, arg in args.items():
        if params.get(key) is None or arg.get("validate") is False:
            continue
        try:
            check_value(params[key], arg, key)
        except ArgError as error:
            invalid[key] = error.message
            details[key] = {"code": error.code, "message": error.message, "data": None}
    if invalid:
        raise RestError(
            "rest_invalid_param",
            f"Invalid parameter(s): {', '.join(invalid)}",
            400,
            params=invalid,
            details=details,
        )


# --- numbers -------------------------------------------------------------------------------


def decimal(value: Any) -> Decimal:
    """A price or amount as WooCommerce reads one (wc_format_decimal, then floatval)."""
    if isinstance(value, Decimal):
        return value
    text = str(value if value is not None else "").strip()
    return Decimal(text) if is_numeric(text) else Decimal(0)


def format_decimal(value: Decimal, dp: int | None = 2) -> str:
    """wc_format_decimal: fixed ``dp`` places, or (dp false, from a float) trailing zeros trimmed."""
    if dp is not None:
        return str(value.quantize(Decimal(1).scaleb(-dp), rounding=ROUND_HALF_UP))
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def php_number(value: Decimal) -> int | float:
    """A PHP division result as json_encode writes it: an int when exact, else a float."""
    return int(value) if value == value.to_integral_value() else float(value)


# --- dates ---------------------------------------------------------------------------------


def rest_date(moment: datetime | None, timezone: ZoneInfo, *, gmt: bool) -> str | None:
    """wc_rest_prepare_date_response: 'Y-m-d\\TH:i:s', in UTC or in site time, never a zone."""
    if moment is None:
        return None
    shown = moment.astimezone(UTC) if gmt else moment.astimezone(timezone)
    return shown.strftime("%Y-%m-%dT%H:%M:%S")


def parse_wc_date(value: Any, timezone: ZoneInfo) -> datetime | None:
    """WC_Data::set_date_prop: a timestamp, an ISO date with Z/±hh:mm, or else site time.

    Returns None for what WooCommerce cannot read (it swallows the exception and leaves the
    date unset).
    """
    if value is None or value == "":
        return None
    if is_numeric(value):
        return datetime.fromtimestamp(int(float(value)), UTC)
    text = str(value)
    zoned = WC_DATE_WITH_ZONE.match(text)
    try:
        if zoned:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
        parsed = datetime.fromisoformat(text.replace(" ", "T"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone)
    return parsed.astimezone(UTC)


def query_datetime(value: str, timezone: ZoneInfo) -> datetime:
    """WP_Date_Query::build_mysql_datetime: a naive 'Y-m-d H:i:s' in site time.

    A value with an offset is converted to site time; a value without one is taken as it
    stands, whichever column (local or GMT) it is then compared with.
    """
    parsed = datetime.fromisoformat(value.replace(" ", "T").replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone).replace(tzinfo=None)
    return parsed.replace(microsecond=0)


# --- links ---------------------------------------------------------------------------------

ITEM_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def links(self_href: str, collection_href: str, **others: str) -> dict[str, list[dict[str, Any]]]:
    """_links as WP_REST_Server::get_compact_response_links leaves them (WordPress 6.7+)."""
    result: dict[str, list[dict[str, Any]]] = {
        "self": [{"href": self_href, "targetHints": {"allow": ITEM_METHODS}}],
        "collection": [{"href": collection_href}],
    }
    for relation, href in others.items():
        result[relation] = [{"href": href}]
    return result
