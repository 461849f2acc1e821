"""Delivery files as Chinese procurement offices produce them: GB18030 and BOM CSVs, XLSX, Chinese headers and
values, 1,299.00 and 2025年9月1日; every bad row named, in the reader's language, none cut; formula-safe
exports."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from typing import Any

from openpyxl import Workbook, load_workbook

from fleet.services import sheets
from tests.conftest import Api
from tests.csvgen import delivery_csv
from tests.factories import build_world, post

V1 = "/api/v1"
ZH_HEADER = "序列号,资产编号,品牌,型号,学校,教室,状态,订单号,采购日期,单价（元）,资金来源,所有权"


async def _upload(
    api: Api, body: bytes, name: str = "delivery.csv", path: str = f"{V1}/imports/devices", **params: str
) -> Any:
    return await api.client.post(
        path,
        files={"file": (name, body, "application/octet-stream")},
        params=params,
        headers=await api.admin(),
    )


async def _export_rows(api: Api, **params: str) -> list[dict[str, str]]:
    r = await api.client.get(f"{V1}/exports/devices", params=params, headers=await api.admin())
    assert r.status_code == 200, r.text
    return list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))


async def _chinese_school(api: Api) -> None:
    d = (await api.client.get(f"{V1}/districts", headers=await api.admin())).json()["items"][0]
    school = await post(
        api,
        f"{V1}/schools",
        {
            "district_id": d["id"],
            "code": "sy-1",
            "name": "第一实验小学",
            "uplink_mbps": 100,
            "timezone": "UTC",
        },
    )
    await post(
        api, f"{V1}/rooms", {"school_id": school["id"], "name": "三年级2班", "kind": "smart_classroom"}
    )


async def test_a_gb18030_file_with_chinese_headers_crlf_and_office_formats_is_read(api: Api) -> None:
    await build_world(api)
    await _chinese_school(api)
    rows = [
        # full-width digits and a full-width space in the serial; school by name; 在用; thousands separator
        'ＳＮ－０００１,ZH-0001,EduTech,LT-100,第一实验小学,三年级2班,在用,PO-1,2025/9/1,"1,299.00",专项经费,自有',
        "SN-0002,ZH-0002,EduTech,LT-100,sy-1,,已到货,PO-1,2025年9月1日,¥1299,专项经费,租赁",
        "SN-0003,ZH-0003,edutech,lt-100,sy-1,,,PO-1,45901,1299元,,",
        "SN-0004　,ZH-0004,EduTech,LT-100,school-a,Room 1,received,PO-1,2025-09-01,329,,leased",
    ]
    body = ("\r\n".join([ZH_HEADER, *rows]) + "\r\n").encode("gb18030")
    r = await _upload(api, body)
    assert r.status_code == 201, r.text
    assert r.json()["created"] == 4
    got = {row["asset_tag"]: row for row in await _export_rows(api)}
    assert got["ZH-0001"]["serial_number"] == "SN-0001"
    assert got["ZH-0001"]["school_code"] == "sy-1" and got["ZH-0001"]["room"] == "三年级2班"
    assert got["ZH-0001"]["status"] == "in_service" and got["ZH-0001"]["unit_cost"] == "1299.00"
    assert got["ZH-0002"]["ownership"] == "leased" and got["ZH-0002"]["status"] == "received"
    assert {got[t]["purchase_date"] for t in ("ZH-0001", "ZH-0002", "ZH-0003")} == {"2025-09-01"}
    assert got["ZH-0003"]["unit_cost"] == "1299.00" and got["ZH-0003"]["vendor"] == "EduTech"
    assert got["ZH-0004"]["serial_number"] == "SN-0004"


async def test_utf8_with_bom_and_forced_encoding(api: Api) -> None:
    await build_world(api)
    text = delivery_csv(20)
    r = await _upload(api, ("\ufeff" + text).encode())
    assert (r.status_code, r.json()["created"]) == (201, 20)
    # GBK bytes forced as UTF-8 are refused with the encoding named, not guessed
    r = await _upload(api, (ZH_HEADER + "\n").encode("gbk"), encoding="utf-8")
    assert r.status_code == 422 and "utf-8" in r.json()["message"]


def _xlsx(sheet_rows: dict[str, list[list[Any]]]) -> bytes:
    wb = Workbook()
    wb.remove(wb.active)
    for title, rows in sheet_rows.items():
        ws = wb.create_sheet(title)
        for row in rows:
            ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


async def test_xlsx_first_sheet_or_named_sheet_with_date_and_number_cells(api: Api) -> None:
    await build_world(api)
    header = ZH_HEADER.split(",")
    rows = [
        [
            12345678,
            "X-1",
            "EduTech",
            "LT-100",
            "school-a",
            "Room 1",
            "在用",
            "PO-9",
            datetime(2025, 9, 1),
            1299,
            "",
            "自有",
        ],
        [
            "X-2",
            "X-2",
            "EduTech",
            "LT-100",
            "school-a",
            None,
            None,
            None,
            date(2024, 3, 5),
            329.5,
            None,
            None,
        ],
        ["X-3", "X-3", "EduTech", "LT-100", "school-a", None, None, None, 45901, "1,299.00", None, "租赁"],
        [None] * 12,  # an empty row in the middle is skipped, not an error
    ]
    book = _xlsx({"说明": [["this sheet is notes"]], "设备清单": [header, *rows]})
    r = await _upload(api, book, "delivery.xlsx")
    assert r.status_code == 422  # the first sheet is the notes sheet
    r = await _upload(api, book, "delivery.xlsx", sheet="设备清单")
    assert r.status_code == 201, r.text
    got = {row["asset_tag"]: row for row in await _export_rows(api)}
    assert got["X-1"]["serial_number"] == "12345678" and got["X-1"]["purchase_date"] == "2025-09-01"
    assert got["X-2"]["unit_cost"] == "329.50" and got["X-2"]["purchase_date"] == "2024-03-05"
    assert got["X-3"]["purchase_date"] == "2025-09-01" and got["X-3"]["ownership"] == "leased"
    r = await _upload(api, book, "delivery.xlsx", sheet="nope")
    assert r.status_code == 422 and "设备清单" in r.json()["message"]


async def test_every_bad_row_is_named_with_the_total_beyond_a_thousand(api: Api) -> None:
    await build_world(api)
    lines = delivery_csv(3000).splitlines()
    for i in range(1, 1501):  # rows 2..1501: a bad purchase date each
        lines[i] = lines[i].replace(",2026-08-", ",2026-13-")
    body = ("\n".join(lines) + "\n").encode()
    r = await _upload(api, body)
    assert r.status_code == 422
    details = r.json()["details"]
    assert len(details) == 1500 and {d["row"] for d in details} == set(range(2, 1502))
    assert details[-1] == {
        "row": 1501,
        "column": "purchase_date",
        "header": "purchase_date",
        "value": lines[1500].split(",")[8],
        "reason": details[-1]["reason"],
    }
    assert "1500 of 3000 rows" in r.json()["message"]
    # the same list as a download, all of it, headers and reasons in Chinese
    r = await _upload(api, body, errors="csv", lang="zh-CN")
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/csv")
    assert r.content.startswith(sheets.BOM.encode())
    table = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert table[0] == ["行", "列", "值", "原因"]
    assert len(table) == 1501 and table[-1][0] == "1501"
    assert "日期" in table[-1][3]


async def test_reasons_follow_the_users_language(api: Api) -> None:
    await build_world(api)
    body = (ZH_HEADER + "\nS-1,T-1,EduTech,LT-100,无此学校,,,,,,,借来的\n").encode("gb18030")
    r = await api.client.post(
        f"{V1}/imports/devices",
        files={"file": ("d.csv", body, "text/csv")},
        headers={**await api.admin(), "Accept-Language": "zh-CN,zh;q=0.9"},
    )
    assert r.status_code == 422
    by_col = {d["column"]: d for d in r.json()["details"]}
    assert by_col["school_code"]["header"] == "学校" and by_col["school_code"]["value"] == "无此学校"
    assert "学校" in by_col["school_code"]["reason"]
    assert by_col["ownership"]["value"] == "借来的" and "租赁" in by_col["ownership"]["reason"]
    assert "行" in r.json()["message"]


async def test_purchase_dates_outside_1990_to_a_year_ahead_are_refused(api: Api) -> None:
    await build_world(api)
    lines = delivery_csv(4).splitlines()
    # the test clock is 2026-09-07: 2027-09-07 is the last accepted day
    for i, day in enumerate(("1989-12-31", "9999-12-31", "2027-09-08", "2027-09-07"), start=1):
        lines[i] = lines[i].replace(lines[i].split(",")[8], day)
    r = await _upload(api, ("\n".join(lines) + "\n").encode())
    assert r.status_code == 422
    assert {(d["row"], d["column"]) for d in r.json()["details"]} == {
        (2, "purchase_date"),
        (3, "purchase_date"),
        (4, "purchase_date"),
    }
    assert "1990-01-01" in r.json()["details"][0]["reason"]


async def test_unreadable_files_are_a_clear_422(api: Api) -> None:
    await build_world(api)
    for name, payload in (
        ("x.xlsx", b"PK\x03\x04 not really a zip"),
        ("x.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100),
        ("x.csv", bytes(range(128, 256)) * 4),
        ("x.csv", b'a,"b\n'),
    ):
        r = await _upload(api, payload, name)
        assert r.status_code == 422, (name, r.text)
        assert r.json()["message"]


async def test_exports_escape_formulas_and_round_trip_them(api: Api) -> None:
    await build_world(api)
    lines = delivery_csv(3).splitlines()
    lines[1] = lines[1].replace("AI education grant", '=HYPERLINK("http://x";"y")')
    lines[2] = lines[2].replace("AI education grant", "@SUM(A1)")
    lines[3] = lines[3].replace("AI education grant", "-1+1")
    r = await _upload(api, ("\n".join(lines) + "\n").encode())
    assert r.status_code == 201, r.text
    raw = await api.client.get(f"{V1}/exports/devices", params={"bom": "true"}, headers=await api.admin())
    assert raw.content.startswith(sheets.BOM.encode())
    rows = list(csv.DictReader(io.StringIO(raw.content.decode("utf-8-sig"))))
    funding = [r["funding_source"] for r in rows if r["asset_tag"].startswith("DLV")]
    assert funding == ['\'=HYPERLINK("http://x";"y")', "'@SUM(A1)", "'-1+1"]
    assert not any(c.startswith(("=", "+", "-", "@")) for r in rows for c in r.values())
    plain = await api.client.get(f"{V1}/exports/devices", headers=await api.admin())
    assert not plain.content.startswith(sheets.BOM.encode())
    # what we wrote reads back as what was imported
    again = (
        raw.content.decode("utf-8-sig")
        .replace("DLV-", "RT-")
        .replace("AT-", "RT-AT-")
        .replace("SN-", "RT-SN-")
    )
    r = await _upload(api, again.encode())
    assert r.status_code == 201, r.text
    rows = await _export_rows(api)
    assert [r["funding_source"] for r in rows if r["asset_tag"].startswith("RT-")][-3:] == funding

    x = await api.client.get(f"{V1}/exports/devices", params={"format": "xlsx"}, headers=await api.admin())
    ws = load_workbook(io.BytesIO(x.content)).active
    assert ws is not None and ws.freeze_panes == "A2" and ws.auto_filter.ref == f"A1:L{ws.max_row}"
    cells = [c.value for row in ws.iter_rows(min_row=2) for c in row]
    assert '\'=HYPERLINK("http://x";"y")' in cells
    assert not any(isinstance(v, str) and v.startswith(("=", "+", "-", "@")) for v in cells)


def test_the_escape_helper() -> None:
    assert [sheets.escape(v) for v in ("=1", "+1", "-1", "@a", "\t=1", "a=1", "", -1, 2.5, None)] == [
        "'=1",
        "'+1",
        "'-1",
        "'@a",
        "'\t=1",
        "a=1",
        "",
        -1,
        2.5,
        None,
    ]
    assert sheets.unescape("'=1") == "=1" and sheets.unescape("'abc") == "'abc"
    assert sheets.csv_bytes(["a"], [["=1+2"]], bom=False) == b"a\n'=1+2\n"
