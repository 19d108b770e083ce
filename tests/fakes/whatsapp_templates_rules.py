"""What Meta accepts for message templates, for the fake Graph API (``whatsapp_graph``).

Two sets of rules live here: the creation rules of ``POST /{waba-id}/message_templates`` and the
send-time match between a template message's ``components`` and the stored template. A broken
rule raises ``Refusal`` carrying the Graph error code; the server turns it into Meta's error body.

Sources (Meta's WhatsApp docs, read in the December 2025 - March 2026 editions):

* COMPONENTS   https://developers.facebook.com/documentation/business-messaging/whatsapp/templates/components
* OVERVIEW     https://developers.facebook.com/documentation/business-messaging/whatsapp/templates/overview
* REVIEW       https://developers.facebook.com/documentation/business-messaging/whatsapp/templates/template-review
* LANGUAGES    https://developers.facebook.com/documentation/business-messaging/whatsapp/templates/supported-languages
* ERRORS       https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes
* CHANGELOG    https://developers.facebook.com/documentation/business-messaging/whatsapp/reference/changelog
* SEND EXAMPLES .../templates/marketing-templates/limited-time-offer-templates (``"index": 1``) and
  .../marketing-templates/media-card-carousel-templates (``"index": "1"``)
* CURRENCY     https://whatsapp.github.io/WhatsApp-Nodejs-SDK/api-reference/types/currency_object
* TEMPLATE OBJECT https://whatsapp.github.io/WhatsApp-Nodejs-SDK/api-reference/types/TemplateObject
  (Meta's own SDK docs: body parameters of type text, currency and date_time)

Meta documents what a valid template is, and which error *code* means what, but rarely which code a
given mistake gets. Where a code below comes from that pairing rather than from a page that names
the case, the comment says "(not verified in docs)"; the ``details`` strings copy what Meta sends
where it has been reported in public code (e.g. "body: number of localizable_params (1) does not
match the expected number of params (3)").
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from babel.numbers import list_currencies

# --- errors ------------------------------------------------------------------------------------


class Refusal(Exception):
    """A request Meta refuses: the Graph error ``code`` and what ``error_data.details`` says.

    ``subcode``, ``user_title`` and ``user_msg`` are set for template-creation errors, which Meta
    answers as code 100 with an ``error_subcode`` naming the problem (ERRORS, "template creation").
    """

    def __init__(
        self,
        code: int,
        details: str,
        *,
        subcode: int | None = None,
        user_title: str | None = None,
        user_msg: str | None = None,
    ) -> None:
        super().__init__(f"({code}) {details}")
        self.code = code
        self.details = details
        self.subcode = subcode
        self.user_title = user_title
        self.user_msg = user_msg


# Cloud API error codes (ERRORS).
INVALID_PARAMETER = 100
REQUIRED_PARAMETER_MISSING = 131008
PARAMETER_VALUE_NOT_VALID = 131009
PARAM_COUNT_MISMATCH = 132000
TEMPLATE_DOES_NOT_EXIST = 132001
PARAM_FORMAT_MISMATCH = 132012
TEMPLATE_PAUSED = 132015
TEMPLATE_DISABLED = 132016
# Added 2025-05-29 "for help diagnosing invalid parameters when sending a template" (CHANGELOG);
# not in the error-codes table. Its details strings below are the ones reported from Meta.
TEMPLATE_PARAMETER_ISSUE = 132018

# Template-creation error subcodes, all under code 100 (ERRORS, "Template creation errors").
CHARACTER_LIMIT_EXCEEDED = 2388040
HEADER_FORMAT_INCORRECT = 2388047
BODY_FORMAT_INCORRECT = 2388072
FOOTER_FORMAT_INCORRECT = 2388073
LEADING_OR_TRAILING_PARAMS = 2388299
TEMPLATE_LIMIT_EXCEEDED = 2388019  # "A WhatsApp Business Account can have up to 250 templates"
# Same name and language again: code 100, subcode 2388024, title "Content in This Language Already
# Exists" (not verified in docs: not on the error-codes or template-management pages; it is what
# Meta answers, as reported in public code).
CONTENT_ALREADY_EXISTS = 2388024

# --- creation limits ---------------------------------------------------------------------------

NAME_PATTERN = re.compile(r"^[a-z0-9_]+$")  # "lowercase alphanumeric characters and underscores"
NAME_MAX_CHARS = 512  # OVERVIEW, "Names"
CATEGORIES = frozenset({"MARKETING", "UTILITY", "AUTHENTICATION"})  # OVERVIEW, "Categories"
PARAMETER_FORMATS = frozenset({"POSITIONAL", "NAMED"})  # positional when omitted (OVERVIEW)
BODY_MAX_CHARS = 1024  # COMPONENTS, "Body"
HEADER_TEXT_MAX_CHARS = 60  # COMPONENTS, "Text header"
FOOTER_MAX_CHARS = 60  # COMPONENTS, "Footer"
BUTTON_TEXT_MAX_CHARS = 25  # COMPONENTS: quick reply, URL and phone number labels
BUTTON_URL_MAX_CHARS = 2000  # COMPONENTS, "URL buttons"
PHONE_NUMBER_MAX_CHARS = 20  # COMPONENTS, "Phone number buttons"
COPY_CODE_MAX_CHARS = 15  # COMPONENTS, "Copy code buttons"
MAX_BUTTONS = 10  # "Templates can combine up to ten button components total" (COMPONENTS)
MAX_BUTTONS_OF_TYPE = {"QUICK_REPLY": 10, "URL": 2, "PHONE_NUMBER": 1, "COPY_CODE": 1}  # COMPONENTS
MAX_TEMPLATES_PER_WABA = 250  # unverified portfolio (OVERVIEW, "Template limits")

# A header's media handle must come from the Resumable Upload API (COMPONENTS, "Media header");
# which MIME types fit which header format is not spelled out there (not verified in docs).
MEDIA_HEADER_FILE_TYPES = {
    "IMAGE": frozenset({"image/jpeg", "image/jpg", "image/png"}),
    "VIDEO": frozenset({"video/mp4"}),
    "DOCUMENT": frozenset({"application/pdf"}),
}
HEADER_FORMATS = frozenset({"TEXT", "LOCATION", *MEDIA_HEADER_FILE_TYPES})  # GIF: MM Lite API only

# Codes from LANGUAGES (updated 2025-11-04).
# fmt: off
SUPPORTED_LANGUAGES = frozenset({
    "af", "sq", "ar", "ar_EG", "ar_AE", "ar_LB", "ar_MA", "ar_QA", "az", "be_BY", "bn", "bn_IN",
    "bg", "ca", "zh_CN", "zh_HK", "zh_TW", "hr", "cs", "da", "prs_AF", "nl", "nl_BE", "en", "en_GB",
    "en_US", "en_AE", "en_AU", "en_CA", "en_GH", "en_IE", "en_IN", "en_JM", "en_MY", "en_NZ", "en_QA",
    "en_SG", "en_UG", "en_ZA", "et", "fil", "fi", "fr", "fr_BE", "fr_CA", "fr_CH", "fr_CI", "fr_MA",
    "ka", "de", "de_AT", "de_CH", "el", "gu", "ha", "he", "hi", "hu", "id", "ga", "it", "ja", "kn",
    "kk", "rw_RW", "ko", "ky_KG", "lo", "lv", "lt", "mk", "ms", "ml", "mr", "nb", "ps_AF", "fa",
    "pl", "pt_BR", "pt_PT", "pa", "ro", "ru", "sr", "si_LK", "sk", "sl", "es", "es_AR", "es_CL",
    "es_CO", "es_CR", "es_DO", "es_EC", "es_HN", "es_MX", "es_PA", "es_PE", "es_ES", "es_UY", "sw",
    "sv", "ta", "te", "th", "tr", "uk", "ur", "uz", "vi", "zu",
})
# fmt: on

PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
LEADING_PLACEHOLDER = re.compile(r"^\{\{[^{}]*\}\}")
TRAILING_PLACEHOLDER = re.compile(r"\{\{[^{}]*\}\}$")
POSITIONAL = re.compile(r"^[1-9][0-9]*$")
HTTP_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)

# --- send-time limits --------------------------------------------------------------------------

# "Param text cannot have new-line/tab characters or more than 4 consecutive spaces" (132018, as
# Meta words it in reports; not on the error-codes page).
BAD_PARAM_TEXT = re.compile(r"[\n\r\t]| {5,}")
CURRENCY_CODES = frozenset(list_currencies())  # ISO 4217 (CURRENCY), from Babel's CLDR data
BUTTON_SUB_TYPES = {"URL": "url", "QUICK_REPLY": "quick_reply", "COPY_CODE": "copy_code"}
# How Meta names a button type in "Button at index 0 must be of type QuickReply" (reported text).
BUTTON_TYPE_NAMES = {"URL": "Url", "QUICK_REPLY": "QuickReply", "COPY_CODE": "CopyCode"}
MAX_BUTTON_INDEX = 9  # 10 buttons at most (COMPONENTS), indexed from 0


# --- the template as stored --------------------------------------------------------------------


@dataclass(frozen=True)
class ButtonShape:
    type: str  # QUICK_REPLY, URL, PHONE_NUMBER, COPY_CODE
    text: str
    url: str | None = None
    url_params: int = 0  # 1 when the URL ends in {{1}}


@dataclass(frozen=True)
class TemplateShape:
    """What a send must fill in, derived from the creation-format components."""

    header_format: str | None
    header_params: int
    header_text: str | None
    body_text: str
    body_params: int
    buttons: tuple[ButtonShape, ...]


@dataclass(frozen=True)
class NewTemplate:
    """A creation payload that passed the rules, with types and formats upper-cased as Meta
    returns them from ``GET message_templates`` (TEMPLATE_MANAGEMENT examples)."""

    name: str
    language: str
    category: str
    parameter_format: str
    components: list[dict[str, Any]]
    shape: TemplateShape


def _creation_error(details: str, subcode: int | None = None, title: str | None = None) -> Refusal:
    return Refusal(
        INVALID_PARAMETER, details, subcode=subcode, user_title=title or "Invalid parameter", user_msg=details
    )


def _positional_params(text: str, where: str, subcode: int) -> int:
    """The number of distinct ``{{n}}`` placeholders, which must run 1, 2, 3... in order of first
    appearance (OVERVIEW, "Positional parameters"; REVIEW: "not sequential, e.g. {{1}}, {{2}},
    {{5}}, {{4}}" is a rejection reason; refused at creation here (not verified in docs))."""
    seen: list[int] = []
    for inner in PLACEHOLDER.findall(text):
        if not POSITIONAL.match(inner):
            raise _creation_error(f"{where}: {{{{{inner}}}}} is not a positional parameter", subcode)
        number = int(inner)
        if number not in seen:
            seen.append(number)
    if seen != list(range(1, len(seen) + 1)):
        raise _creation_error(f"{where}: parameters must be sequential from {{{{1}}}}", subcode)
    if text.count("{{") != len(PLACEHOLDER.findall(text)) or "}}" in PLACEHOLDER.sub("", text):
        raise _creation_error(f"{where}: mismatched curly braces", subcode)
    return len(seen)


def _text(component: Mapping[str, Any], key: str, where: str, limit: int) -> str:
    value = component.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _creation_error(f"{where}: the parameter {key} is required")
    if len(value) > limit:
        raise _creation_error(
            f"{where}: {key} is {len(value)} characters, the limit is {limit}",
            CHARACTER_LIMIT_EXCEEDED,
            "Character Limit Exceeded",
        )
    return value


def _example_strings(value: Any, count: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(item, str) and item.strip() for item in value)
    )


def _check_header(component: dict[str, Any], known_handle: Callable[[str], str | None] | None) -> int:
    header_format = str(component.get("format", "")).upper()
    component["format"] = header_format
    if header_format not in HEADER_FORMATS:
        raise _creation_error(
            f"HEADER: format {header_format or '(none)'} is not supported",
            HEADER_FORMAT_INCORRECT,
            "Message Header Format Is Incorrect",
        )
    example = component.get("example")
    if header_format == "TEXT":
        text = _text(component, "text", "HEADER", HEADER_TEXT_MAX_CHARS)
        params = _positional_params(text, "HEADER", HEADER_FORMAT_INCORRECT)
        if params > 1:  # "Text headers support 1 parameter" (COMPONENTS)
            raise _creation_error(
                "HEADER: a text header takes one parameter at most", HEADER_FORMAT_INCORRECT
            )
        if params and not (isinstance(example, dict) and _example_strings(example.get("header_text"), 1)):
            raise _creation_error("HEADER: example.header_text must hold one example value")
        return params
    if header_format in MEDIA_HEADER_FILE_TYPES:
        handles = example.get("header_handle") if isinstance(example, dict) else None
        if not _example_strings(handles, 1):
            raise _creation_error(f"HEADER: a {header_format} header needs example.header_handle [handle]")
        assert isinstance(handles, list)
        if known_handle is not None:
            file_type = known_handle(handles[0])
            if file_type is None:
                raise _creation_error("HEADER: example.header_handle is not a handle from the upload API")
            if file_type not in MEDIA_HEADER_FILE_TYPES[header_format]:
                raise _creation_error(
                    f"HEADER: a {header_format} header cannot use a {file_type} file", HEADER_FORMAT_INCORRECT
                )
    return 0


def _check_body(component: Mapping[str, Any]) -> int:
    text = _text(component, "text", "BODY", BODY_MAX_CHARS)
    params = _positional_params(text, "BODY", BODY_FORMAT_INCORRECT)
    stripped = text.strip()
    if LEADING_PLACEHOLDER.match(stripped) or TRAILING_PLACEHOLDER.search(stripped):
        # ERRORS: 2388299 "Variables can't be at the start or end of the template" (REVIEW too).
        raise _creation_error(
            "BODY: the body cannot start or end with a parameter",
            LEADING_OR_TRAILING_PARAMS,
            "Leading or trailing params not allowed",
        )
    if params:
        example = component.get("example")
        rows = example.get("body_text") if isinstance(example, dict) else None
        # Positional syntax: "body_text": [[...one value per parameter...]] (COMPONENTS, "Body").
        if not (isinstance(rows, list) and len(rows) == 1 and _example_strings(rows[0], params)):
            raise _creation_error(f"BODY: example.body_text must be [[{params} example values]]")
    return params


def _check_footer(component: Mapping[str, Any]) -> None:
    text = _text(component, "text", "FOOTER", FOOTER_MAX_CHARS)
    if "{{" in text or "}}" in text:  # footers are text only (COMPONENTS, "Footer")
        raise _creation_error(
            "FOOTER: the footer cannot hold parameters",
            FOOTER_FORMAT_INCORRECT,
            "Message Footer Format Is Incorrect",
        )


def _check_url_button(button: dict[str, Any], where: str) -> int:
    url = _text(button, "url", where, BUTTON_URL_MAX_CHARS)
    if not HTTP_URL.match(url.replace("{{1}}", "x")):
        raise _creation_error(f"{where}: url must be an http(s) URL")  # (not verified in docs)
    placeholders = PLACEHOLDER.findall(url)
    if not placeholders:
        return 0
    # "Supports 1 variable, appended to the end of the URL string" (COMPONENTS, "URL buttons").
    if placeholders != ["1"] or not url.endswith("{{1}}"):
        raise _creation_error(f"{where}: the url takes one variable, {{{{1}}}}, at its end")
    # COMPONENTS shows both a full example URL (property table) and ["summer2023"] (example
    # request), so one non-empty string of either kind is accepted.
    if not _example_strings(button.get("example"), 1):
        raise _creation_error(f"{where}: a url with a variable needs example [one example]")
    return 1


def _check_buttons(component: Mapping[str, Any]) -> tuple[ButtonShape, ...]:
    buttons = component.get("buttons")
    if not isinstance(buttons, list) or not buttons or len(buttons) > MAX_BUTTONS:
        raise _creation_error(f"BUTTONS: buttons must hold 1 to {MAX_BUTTONS} buttons")
    shapes: list[ButtonShape] = []
    for index, button in enumerate(buttons):
        where = f"BUTTONS[{index}]"
        if not isinstance(button, dict):
            raise _creation_error(f"{where}: a button must be an object")
        kind = str(button.get("type", "")).upper()
        button["type"] = kind
        if kind not in MAX_BUTTONS_OF_TYPE:  # FLOW, OTP, MPM, CATALOG, SPM: not modelled here
            raise _creation_error(f"{where}: cartback fake: button type {kind or '(none)'} is not modelled")
        if kind == "COPY_CODE":
            example = button.get("example")
            if not isinstance(example, str) or not 0 < len(example) <= COPY_CODE_MAX_CHARS:
                raise _creation_error(f"{where}: example is 1 to {COPY_CODE_MAX_CHARS} characters")
            shapes.append(ButtonShape(kind, ""))
            continue
        text = _text(button, "text", where, BUTTON_TEXT_MAX_CHARS)
        if "{{" in text:  # labels are fixed text (COMPONENTS) (not verified in docs)
            raise _creation_error(f"{where}: button text cannot hold parameters")
        if kind == "PHONE_NUMBER":
            _text(button, "phone_number", where, PHONE_NUMBER_MAX_CHARS)
            shapes.append(ButtonShape(kind, text))
        elif kind == "URL":
            shapes.append(ButtonShape(kind, text, button["url"], _check_url_button(button, where)))
        else:
            shapes.append(ButtonShape(kind, text))
    for kind, limit in MAX_BUTTONS_OF_TYPE.items():
        if sum(shape.type == kind for shape in shapes) > limit:
            raise _creation_error(f"BUTTONS: at most {limit} {kind} button(s)")
    # Quick replies form one group, before or after the other buttons (COMPONENTS: "Quick reply,
    # URL, Quick reply" is an invalid combination).
    groups = [shape.type == "QUICK_REPLY" for shape in shapes]
    if sum(1 for i, qr in enumerate(groups) if i == 0 or qr != groups[i - 1]) > 2:
        raise _creation_error("BUTTONS: quick reply buttons must be grouped together (invalid combination)")
    return tuple(shapes)


def check_new_template(
    payload: Mapping[str, Any], *, known_handle: Callable[[str], str | None] | None
) -> NewTemplate:
    """Apply the creation rules; ``known_handle`` maps an upload handle to its MIME type (None:
    seeding, where the header example is not checked against issued handles)."""
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        raise _creation_error("The parameter name is required.")
    if len(name) > NAME_MAX_CHARS or not NAME_PATTERN.match(name):
        raise _creation_error(
            f"name must be lowercase letters, digits and underscores, at most {NAME_MAX_CHARS} characters"
        )
    language = payload.get("language")
    if not isinstance(language, str) or language not in SUPPORTED_LANGUAGES:
        raise _creation_error(f"language {language!r} is not a supported template language")
    category = str(payload.get("category", "")).upper()
    if category not in CATEGORIES:
        raise _creation_error(f"category must be one of {', '.join(sorted(CATEGORIES))}")
    parameter_format = str(payload.get("parameter_format", "positional")).upper()
    if parameter_format not in PARAMETER_FORMATS:
        raise _creation_error("parameter_format must be positional or named")
    if parameter_format == "NAMED":
        raise _creation_error("cartback fake: named parameters are not modelled; use positional")
    given = payload.get("components")
    if not isinstance(given, list) or not given:
        raise _creation_error("The parameter components is required.")
    components: list[dict[str, Any]] = []
    header_format: str | None = None
    header_text: str | None = None
    header_params = 0
    body_text = ""
    body_params = 0
    buttons: tuple[ButtonShape, ...] = ()
    for raw in given:
        if not isinstance(raw, dict):
            raise _creation_error("components: each component must be an object")
        component = copy.deepcopy(raw)  # upper-cased and stored without touching the caller's
        kind = str(component.get("type", "")).upper()
        component["type"] = kind
        if any(existing["type"] == kind for existing in components):
            # "Templates can have only one body/footer component; one text header" (COMPONENTS).
            raise _creation_error(f"components: only one {kind} component is allowed")
        if kind == "HEADER":
            header_params = _check_header(component, known_handle)
            header_format = component["format"]
            header_text = component.get("text") if header_format == "TEXT" else None
        elif kind == "BODY":
            body_params = _check_body(component)
            body_text = component["text"]
        elif kind == "FOOTER":
            _check_footer(component)
        elif kind == "BUTTONS":
            buttons = _check_buttons(component)
        else:
            raise _creation_error(f"components: type {kind or '(none)'} is not a template component")
        components.append(component)
    if not body_text:
        raise _creation_error("components: a BODY component is required")  # "the only required one"
    shape = TemplateShape(header_format, header_params, header_text, body_text, body_params, buttons)
    return NewTemplate(name, language, category, parameter_format, components, shape)


# --- sending -----------------------------------------------------------------------------------


@dataclass
class RenderedTemplate:
    """What a valid send fills in: for tests to read the message as the shopper would."""

    body: str
    header_text: str | None = None
    header_media: dict[str, str] | None = None  # {"link": ...} or {"id": ...}
    button_urls: dict[int, str] = field(default_factory=dict)
    button_payloads: dict[int, str] = field(default_factory=dict)


def _count_mismatch(where: str, got: int, expected: int) -> Refusal:
    return Refusal(
        PARAM_COUNT_MISMATCH,
        f"{where}: number of localizable_params ({got}) does not match the expected number of params ({expected})",
    )


def _param_text(param: Mapping[str, Any], where: str) -> str:
    text = param.get("text")
    if not isinstance(text, str) or not text.strip():
        # (not verified in docs) 131008 is "Required parameter is missing" (ERRORS).
        raise Refusal(REQUIRED_PARAMETER_MISSING, f"{where}: Parameter of type text is missing text value")
    if BAD_PARAM_TEXT.search(text):
        raise Refusal(
            TEMPLATE_PARAMETER_ISSUE,
            f"{where}: Param text cannot have new-line/tab characters or more than 4 consecutive spaces",
        )
    return text


def _param_currency(param: Mapping[str, Any], where: str) -> str:
    currency = param.get("currency")
    if not isinstance(currency, dict):
        raise Refusal(REQUIRED_PARAMETER_MISSING, f"{where}: Parameter of type currency is missing currency")
    fallback, code, amount = currency.get("fallback_value"), currency.get("code"), currency.get("amount_1000")
    # fallback_value string, code "3-character currency code as defined in ISO 4217", amount_1000
    # "the currency amount multiplied by 1000" (CURRENCY). 131008/131009 (not verified in docs).
    if not isinstance(fallback, str) or not fallback.strip() or code is None or amount is None:
        raise Refusal(
            REQUIRED_PARAMETER_MISSING, f"{where}: currency needs fallback_value, code and amount_1000"
        )
    if not isinstance(code, str) or code not in CURRENCY_CODES:
        raise Refusal(PARAMETER_VALUE_NOT_VALID, f"{where}: currency code {code!r} is not ISO 4217")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise Refusal(PARAMETER_VALUE_NOT_VALID, f"{where}: amount_1000 must be an integer")
    _param_text({"text": fallback}, where)
    return fallback


def _param_date_time(param: Mapping[str, Any], where: str) -> str:
    date_time = param.get("date_time")
    fallback = date_time.get("fallback_value") if isinstance(date_time, dict) else None
    if not isinstance(fallback, str) or not fallback.strip():
        raise Refusal(REQUIRED_PARAMETER_MISSING, f"{where}: date_time needs fallback_value")
    return fallback


def _text_like(param: Any, where: str) -> str:
    """A body (or text header) parameter: text, currency or date_time (TEMPLATE OBJECT)."""
    kind = param.get("type") if isinstance(param, dict) else None
    if not isinstance(param, dict) or kind not in ("text", "currency", "date_time"):
        received = str(kind).upper() if kind else "UNKNOWN"
        raise Refusal(PARAM_FORMAT_MISMATCH, f"{where}: Format mismatch, expected TEXT, received {received}")
    if kind == "currency":
        return _param_currency(param, where)
    if kind == "date_time":
        return _param_date_time(param, where)
    return _param_text(param, where)


def _render(text: str, values: list[str]) -> str:
    return PLACEHOLDER.sub(lambda match: values[int(match.group(1)) - 1], text)


def _parameters(component: Mapping[str, Any], where: str) -> list[Any]:
    params = component.get("parameters", [])
    if not isinstance(params, list):
        raise Refusal(INVALID_PARAMETER, f"{where}: parameters must be an array")
    return params


def _split_components(
    components: Any,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[dict[str, Any]]]:
    if components is None:
        return None, None, []
    if not isinstance(components, list):
        raise Refusal(INVALID_PARAMETER, "template: components must be an array")
    header: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    buttons: list[dict[str, Any]] = []
    for component in components:
        kind = str(component.get("type", "")).lower() if isinstance(component, dict) else ""
        if not isinstance(component, dict) or kind not in ("header", "body", "button"):
            # Footers take no parameters and the other send-side types (carousel, limited time
            # offer...) are not modelled (not verified in docs).
            raise Refusal(
                PARAMETER_VALUE_NOT_VALID, f"components: type {kind or '(none)'} is not supported here"
            )
        if kind == "button":
            buttons.append(component)
        elif (header if kind == "header" else body) is not None:
            raise Refusal(PARAMETER_VALUE_NOT_VALID, f"components: only one {kind} component is allowed")
        elif kind == "header":
            header = component
        else:
            body = component
    return header, body, buttons


def _check_send_header(
    shape: TemplateShape, header: Mapping[str, Any] | None, rendered: RenderedTemplate
) -> None:
    params = _parameters(header, "header") if header is not None else []
    if shape.header_format in MEDIA_HEADER_FILE_TYPES:
        expected = shape.header_format.lower()
        if not params:
            # Reported verbatim as 132012; some reports say Meta answers 200 and then sends it in a
            # failed status webhook. The fake refuses at once.
            raise Refusal(
                PARAM_FORMAT_MISMATCH,
                f"header: Format mismatch, expected {shape.header_format}, received UNKNOWN",
            )
        if len(params) != 1:
            raise _count_mismatch("header", len(params), 1)
        param = params[0]
        kind = param.get("type") if isinstance(param, dict) else None
        if not isinstance(param, dict) or kind != expected:
            raise Refusal(
                PARAM_FORMAT_MISMATCH,
                f"header: Format mismatch, expected {shape.header_format}, received {str(kind).upper()}",
            )
        media = param.get(expected)
        # "A media object. Either id or link is required"; link is "HTTP/HTTPS only" (MESSAGE API).
        keys = {key for key in ("id", "link") if isinstance(media, dict) and media.get(key)}
        if len(keys) != 1:
            raise Refusal(REQUIRED_PARAMETER_MISSING, f"header: {expected} needs exactly one of id or link")
        assert isinstance(media, dict)
        if "link" in keys and not (isinstance(media["link"], str) and HTTP_URL.match(media["link"])):
            raise Refusal(PARAMETER_VALUE_NOT_VALID, f"header: {expected}.link must be an http(s) URL")
        key = keys.pop()
        rendered.header_media = {key: str(media[key])}
        return
    if shape.header_format == "LOCATION":
        location = params[0].get("location") if len(params) == 1 and isinstance(params[0], dict) else None
        if not isinstance(location, dict) or "latitude" not in location or "longitude" not in location:
            raise Refusal(
                PARAM_FORMAT_MISMATCH, "header: Format mismatch, expected LOCATION, received UNKNOWN"
            )
        return
    if len(params) != shape.header_params:
        raise _count_mismatch("header", len(params), shape.header_params)
    values = [_text_like(param, "header") for param in params]
    if shape.header_text is not None:
        rendered.header_text = _render(shape.header_text, values)


def _button_index(component: Mapping[str, Any]) -> int:
    # Meta's examples send both "index": 0 and "index": "0" (SEND EXAMPLES).
    index = component.get("index")
    if isinstance(index, str) and index.isdigit():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_BUTTON_INDEX:
        raise Refusal(PARAMETER_VALUE_NOT_VALID, f"buttons: index {component.get('index')!r} is not 0 to 9")
    return index


def _check_send_button(
    shape: ButtonShape, index: int, component: Mapping[str, Any], rendered: RenderedTemplate
) -> None:
    where = f"buttons: Button at index {index}"
    expected_sub_type = BUTTON_SUB_TYPES.get(shape.type)
    if expected_sub_type is None:  # phone number buttons take nothing (not verified in docs)
        raise Refusal(TEMPLATE_PARAMETER_ISSUE, f"{where} of type PhoneNumber takes no parameters")
    if str(component.get("sub_type", "")).lower() != expected_sub_type:
        raise Refusal(TEMPLATE_PARAMETER_ISSUE, f"{where} must be of type {BUTTON_TYPE_NAMES[shape.type]}")
    params = _parameters(component, "buttons")
    if shape.type == "URL":
        if not shape.url_params:
            raise Refusal(TEMPLATE_PARAMETER_ISSUE, f"{where} of type Url takes no parameters")
        # An empty suffix is refused like a missing one (reported).
        if not params or (isinstance(params[0], dict) and params[0].get("text") in ("", None)):
            raise Refusal(REQUIRED_PARAMETER_MISSING, f"{where} of type Url requires a parameter")
        if len(params) != 1:
            raise _count_mismatch("buttons", len(params), 1)
        if not isinstance(params[0], dict) or params[0].get("type") != "text":
            raise Refusal(PARAM_FORMAT_MISMATCH, f"{where}: Format mismatch, expected TEXT")
        assert shape.url is not None
        rendered.button_urls[index] = shape.url.replace("{{1}}", _param_text(params[0], "buttons"))
        return
    parameter_type = "payload" if shape.type == "QUICK_REPLY" else "coupon_code"
    if len(params) != 1:
        raise _count_mismatch("buttons", len(params), 1)
    value = params[0].get(parameter_type) if isinstance(params[0], dict) else None
    if not isinstance(params[0], dict) or params[0].get("type") != parameter_type:
        raise Refusal(PARAM_FORMAT_MISMATCH, f"{where}: Format mismatch, expected {parameter_type.upper()}")
    if not isinstance(value, str) or not value:
        raise Refusal(REQUIRED_PARAMETER_MISSING, f"{where}: Parameter of type {parameter_type} is missing")
    if shape.type == "COPY_CODE" and len(value) > COPY_CODE_MAX_CHARS:
        raise Refusal(
            PARAMETER_VALUE_NOT_VALID, f"{where}: coupon_code is over {COPY_CODE_MAX_CHARS} characters"
        )
    rendered.button_payloads[index] = value


def check_send(shape: TemplateShape, components: Any) -> RenderedTemplate:
    """Match a send's ``template.components`` against the stored template's shape."""
    header, body, button_components = _split_components(components)
    if header is not None and shape.header_format is None:
        raise _count_mismatch("header", len(_parameters(header, "header")), 0)
    rendered = RenderedTemplate(body="")
    _check_send_header(shape, header, rendered)
    params = _parameters(body, "body") if body is not None else []
    if len(params) != shape.body_params:
        raise _count_mismatch("body", len(params), shape.body_params)
    rendered.body = _render(shape.body_text, [_text_like(param, "body") for param in params])
    seen: set[int] = set()
    for component in button_components:
        index = _button_index(component)
        if index in seen:
            raise Refusal(PARAMETER_VALUE_NOT_VALID, f"buttons: index {index} is given twice")
        seen.add(index)
        if index >= len(shape.buttons):
            raise Refusal(TEMPLATE_PARAMETER_ISSUE, f"buttons: Button at index {index} does not exist")
        _check_send_button(shape.buttons[index], index, component, rendered)
    for index, button in enumerate(shape.buttons):
        if button.type == "URL" and button.url_params and index not in seen:
            raise Refusal(
                REQUIRED_PARAMETER_MISSING,
                f"buttons: Button at index {index} of type Url requires a parameter",
            )
        if button.type == "URL" and not button.url_params:
            rendered.button_urls[index] = button.url or ""
    return rendered
