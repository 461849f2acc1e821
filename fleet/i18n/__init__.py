"""Languages: Simplified Chinese and English from one set of gettext catalogs, for every message a person
reads.

The catalogs are plain `.po` files under `fleet/i18n/locale/<locale>/LC_MESSAGES/`, one file per area of the
product (`console.po`, `reports.po`, `imports.po`, `errors.po`, ...). All files of a locale merge into one
catalog, so areas never fight over one file, and a message is translated once for the whole product. They are
read with Babel at first use (no compile step, nothing generated to commit).

    from fleet.i18n import _, use_locale
    with use_locale("zh_CN"):
        _("Devices")                        # -> "设备"
        _("{n} rows rejected", n=3)         # str.format after translation

`_` marks a message for extraction and translates it in the current locale (a context variable set per
request, report or CLI command). `N_` only marks (for module-level constants translated later with `_`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from functools import cache
from pathlib import Path

from babel import Locale
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).parent / "locale"
# The languages the product ships; the first is the fallback when nothing else matches.
SUPPORTED: tuple[str, ...] = ("en", "zh_CN")
DEFAULT_LOCALE = "en"

_current: ContextVar[str] = ContextVar("labfleet_locale", default=DEFAULT_LOCALE)


def normalize(tag: str | None) -> str | None:
    """A supported locale for a language tag (`zh`, `zh-CN`, `zh_Hans_CN`, `en-US`), or None."""
    if not tag:
        return None
    t = tag.strip().replace("-", "_").lower()
    if t.startswith("zh"):
        # Traditional-script tags are not served Simplified text by mistake: they fall back to English.
        return None if ("hant" in t or t in ("zh_tw", "zh_hk", "zh_mo")) else "zh_CN"
    if t.startswith("en"):
        return "en"
    return None


def negotiate(
    *, user: str | None = None, accept_language: str | None = None, default: str | None = None
) -> str:
    """The user's setting, then the browser's Accept-Language (by q), then the site default, then English."""
    if (loc := normalize(user)) is not None:
        return loc
    if accept_language:
        ranked: list[tuple[float, int, str]] = []
        for i, part in enumerate(
            accept_language.split(",")[:20]
        ):  # a hostile header is cut, not parsed whole
            lang, _sep, params = part.strip().partition(";")
            q = 1.0
            if params.strip().startswith("q="):
                try:
                    q = float(params.strip()[2:])
                except ValueError:
                    q = 0.0
            ranked.append((-q, i, lang))
        for negq, _i, lang in sorted(ranked):
            if negq < 0 and (loc := normalize(lang)) is not None:
                return loc
    return normalize(default) or DEFAULT_LOCALE


@cache
def catalog(locale: str) -> dict[str, str]:
    """Every translated message of a locale, merged from all its `.po` files (fuzzy and empty entries left
    out)."""
    merged: dict[str, str] = {}
    folder = LOCALE_DIR / locale / "LC_MESSAGES"
    for po in sorted(folder.glob("*.po")):
        with po.open("rb") as fh:
            cat: Catalog = read_po(fh, locale=locale)
        for msg in cat:
            if (
                msg.id
                and not msg.fuzzy
                and isinstance(msg.id, str)
                and isinstance(msg.string, str)
                and msg.string
            ):
                merged[msg.id] = msg.string
    return merged


def current_locale() -> str:
    return _current.get()


@contextlib.contextmanager
def use_locale(locale: str | None) -> Iterator[str]:
    """Translate in `locale` (normalised; unknown means the default) inside the block."""
    loc = normalize(locale) or DEFAULT_LOCALE
    token = _current.set(loc)
    try:
        yield loc
    finally:
        _current.reset(token)


def set_locale(locale: str | None) -> str:
    """Set the locale for the rest of this context (a request's task, a CLI command)."""
    loc = normalize(locale) or DEFAULT_LOCALE
    _current.set(loc)
    return loc


def gettext(message: str, locale: str | None = None) -> str:
    loc = locale or _current.get()
    if loc == DEFAULT_LOCALE:
        return message
    return catalog(loc).get(message, message)


def template_gettext(message: str) -> str:
    """gettext for Jinja's `{% trans %}` blocks (newstyle).

    Jinja escapes every `%` of a block as `%%` before the lookup and applies `% fields` to the result, even
    when the block has no fields, while Babel extracts a block without fields with its `%` as written. So
    such a message is looked up as written too, and its translation handed back escaped the same way.
    """
    loc = _current.get()
    if loc == DEFAULT_LOCALE:
        return message
    found = catalog(loc)
    if message in found:
        return found[message]
    if "%%" in message:
        plain = message.replace("%%", "%")
        if plain in found:
            return found[plain].replace("%", "%%")
    return message


def _(message: str, /, **fields: object) -> str:
    """Translate in the current locale; `{name}` fields are filled after translation."""
    text = gettext(message)
    return text.format(**fields) if fields else text


def N_(message: str) -> str:
    """Mark a message for extraction without translating it now."""
    return message


def babel_locale(locale: str | None = None) -> Locale:
    return Locale.parse(locale or _current.get())
