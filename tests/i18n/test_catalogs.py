"""Chinese is a first-class language: every marked message has a zh_CN translation, every code a name."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from fleet.i18n import _, catalog, negotiate, use_locale
from fleet.i18n import format as fmt
from fleet.i18n.extract import marked
from fleet.i18n.labels import NAMES, label


@pytest.fixture(scope="module")
def all_marked() -> dict[str, list[str]]:
    return marked()


def test_every_marked_message_has_a_chinese_translation(all_marked: dict[str, list[str]]) -> None:
    have = catalog("zh_CN")
    gone = {mid: where for mid, where in all_marked.items() if mid not in have}
    assert not gone, "untranslated (run `python -m fleet.i18n.extract --add AREA`):\n" + "\n".join(
        f"{where[0]}: {mid!r}" for mid, where in sorted(gone.items())
    )


def test_extraction_finds_the_labels_so_the_check_above_is_not_empty(
    all_marked: dict[str, list[str]],
) -> None:
    ids = all_marked
    assert "In service" in ids and "Smart classroom" in ids


def test_every_value_of_a_named_enum_has_a_name() -> None:
    for enum, names in NAMES.items():
        assert set(names) == {m.value for m in enum}, enum.__name__


def test_codes_read_as_names_in_both_languages() -> None:
    from fleet.domain.enums import DeviceStatus, RoomKind

    with use_locale("en"):
        assert label(DeviceStatus.IN_SERVICE) == "In service"
    with use_locale("zh-CN"):
        assert label(DeviceStatus.IN_SERVICE) == "在用"
        assert label("smart_classroom", RoomKind) == "智慧教室"
        assert label("battery_low") == "电量低"
        assert label("no_such_code") == "no_such_code"


@pytest.mark.parametrize(
    ("user", "header", "default", "expected"),
    [
        ("zh_CN", "en-US,en;q=0.9", "en", "zh_CN"),
        (None, "zh-CN,zh;q=0.9,en;q=0.8", "en", "zh_CN"),
        (None, "en;q=0.5, zh;q=0.9", "en", "zh_CN"),
        (None, "zh-TW", "en", "en"),
        (None, "fr-FR", "zh-CN", "zh_CN"),
        (None, None, None, "en"),
        (None, "zh;q=0", "en", "en"),
    ],
)
def test_the_language_comes_from_the_user_then_the_browser_then_the_site(
    user, header, default, expected
) -> None:
    assert negotiate(user=user, accept_language=header, default=default) == expected


def test_fields_are_filled_after_translation() -> None:
    with use_locale("zh_CN"):
        assert _("Not a translated {thing}", thing="x") == "Not a translated x"
    assert catalog("zh_CN")["Lost"] == "已丢失"


def test_money_dates_and_times_follow_the_locale_and_the_school_zone() -> None:
    assert fmt.money(Decimal(1299), "zh_CN") == "¥1,299.00"
    assert fmt.money(Decimal(1299), "en") == "CN¥1,299.00"
    assert fmt.day(date(2025, 9, 1), "zh_CN") == "2025年9月1日"
    when = datetime(2025, 9, 1, 0, 5, tzinfo=UTC)
    assert fmt.moment(when, "Asia/Shanghai", "zh_CN").startswith("2025年9月1日 08:05")
    assert fmt.number(12345.678, "en", digits=1) == "12,345.7"
