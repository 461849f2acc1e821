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


def test_a_message_reads_the_same_in_every_area_file() -> None:
    """All `.po` files merge into one catalog, so one msgid with two translations silently loses one (the
    console's menu once read "设备数", device count, because a report column's translation won)."""
    from babel.messages.pofile import read_po

    from fleet.i18n import LOCALE_DIR

    seen: dict[str, tuple[str, str]] = {}
    clashes = []
    for po in sorted((LOCALE_DIR / "zh_CN" / "LC_MESSAGES").glob("*.po")):
        with po.open("rb") as fh:
            for msg in read_po(fh, locale="zh_CN"):
                if not msg.id or not isinstance(msg.id, str) or not msg.string:
                    continue
                first = seen.setdefault(msg.id, (po.name, str(msg.string)))
                if first[1] != msg.string:
                    clashes.append(f"{msg.id!r}: {first[0]} {first[1]!r} vs {po.name} {msg.string!r}")
    assert not clashes, "\n".join(clashes)
    with use_locale("zh_CN"):
        assert _("Devices") == "设备"


def test_every_audited_action_has_a_name_in_both_languages() -> None:
    """Every action the code records (`action="x.y"`, `action=f"rollout.{...}"`, a CRUD service's
    `name = "..."` with create/update/delete) reads as a name, never as the raw code."""
    import re
    from pathlib import Path

    from drivers.provisioning import Outcome
    from fleet.i18n.labels import AUDIT_OBJECTS, AUDIT_VERBS, audit_action

    root = Path(__file__).resolve().parents[2] / "fleet"
    codes: set[str] = set()
    objects: set[str] = set()
    for py in root.rglob("*.py"):
        text = py.read_text(encoding="utf-8")
        for first, other in re.findall(
            r'action="([a-z_]+\.[a-z_]+)"(?: if [^\n]* else "([a-z_]+\.[a-z_]+)")?', text
        ):
            codes.update(c for c in (first, other) if c)
        objects.update(re.findall(r'action=f"([a-z_]+)\.\{', text))
        if "(CrudService)" in text:
            for name in re.findall(r'^    name = "([a-z_]+)"', text, re.MULTILINE):
                codes.update(f"{name}.{verb}" for verb in ("create", "update", "delete"))
    codes.update(f"{o}.provision_{outcome}" for o in ("kit", "device") for outcome in Outcome)
    codes.update(f"rollout.{v}" for v in ("pause", "resume", "abort"))
    codes.update(f"alert.{v}" for v in ("ack", "resolve"))
    assert len(codes) > 40 and "bell_period.create" in codes and "device.transition" in codes
    assert "user.enable" in codes  # the second branch of a conditional action
    for obj in objects:
        assert obj in AUDIT_OBJECTS, obj
    for code in sorted(codes):
        obj, _dot, verb = code.partition(".")
        assert obj in AUDIT_OBJECTS and verb in AUDIT_VERBS, f"no name for audit action {code!r}"
        with use_locale("zh_CN"):
            zh = audit_action(code)
        assert code not in zh and not re.search(r"[a-z]", zh), (code, zh)
    with use_locale("zh_CN"):
        assert audit_action("bell_period.create") == "作息时段 · 创建"
        # An action not yet named still reads as words, not as the code.
        assert audit_action("new_thing.got_done") == "New thing · got done"
    assert audit_action("device.transition") == "Device · lifecycle status changed"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # No fields: Babel extracts "Peak uplink use (%)", Jinja looks up "Peak uplink use (%%)".
        ("{% trans %}Peak uplink use (%){% endtrans %}", "峰值出口带宽占用（%）"),
        # Not in the catalog: the English text, with its % intact.
        ("{% trans %}Nothing like 80% of this{% endtrans %}", "Nothing like 80% of this"),
    ],
)
def test_a_percent_sign_in_a_trans_block_is_still_translated(source: str, expected: str) -> None:
    from fleet.console.app import build_env

    env = build_env()
    with use_locale("zh_CN"):
        assert env.from_string(source).render() == expected
    with use_locale("en"):
        assert "%%" not in env.from_string(source).render()
