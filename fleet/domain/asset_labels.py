"""Asset-label sheets: where each label sits on a page, in millimetres, and what its QR code carries.

The A4 layouts match the common pre-cut sheets, so a label prints inside its die-cut:

- `3x8`: 24 labels of 63.5 x 33.9 mm (Avery L7159 / J8159 and their equivalents, Herma 4615 size):
  top and bottom margin 12.9 mm, left and right 7.2 mm, 2.5 mm between columns, none between rows.
- `2x7`: 14 labels of 99.1 x 38.1 mm (Avery L7163 / J8163 and equivalents): top and bottom margin 15.15 mm,
  left and right 4.65 mm, 2.5 mm between columns, none between rows.
- `roll50x30`: one 50 x 30 mm label per page, for thermal roll printers (the driver's page is the label).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class LabelContent(StrEnum):
    """What the QR code carries."""

    URL = "url"  # the device's console page: a phone's camera opens it
    TAG = "tag"  # the asset tag alone: for scanners that type into a form


@dataclass(frozen=True, slots=True)
class Sheet:
    """One label layout: the page, the label and where the first label starts, all in millimetres."""

    code: str
    page_w: float
    page_h: float
    columns: int
    rows: int
    label_w: float
    label_h: float
    left: float  # page edge to the first column
    top: float  # page edge to the first row
    pitch_x: float  # left edge of one column to the next
    pitch_y: float  # top edge of one row to the next
    padding: float  # label edge to its printed content: die-cuts drift by ~1 mm on office printers
    text_pt: float  # the asset tag's size; the other lines are 80% of it

    @property
    def per_page(self) -> int:
        return self.columns * self.rows

    def position(self, index: int) -> tuple[int, float, float]:
        """The page number (from 0) and the label's top-left corner on it, for the index-th label."""
        page, slot = divmod(index, self.per_page)
        row, col = divmod(slot, self.columns)
        return page, self.left + col * self.pitch_x, self.top + row * self.pitch_y

    def pages(self, count: int) -> int:
        return -(-count // self.per_page)


SHEETS: dict[str, Sheet] = {
    s.code: s
    for s in (
        Sheet("3x8", 210.0, 297.0, 3, 8, 63.5, 33.9, 7.2, 12.9, 66.0, 33.9, 2.0, 9.0),
        Sheet("2x7", 210.0, 297.0, 2, 7, 99.1, 38.1, 4.65, 15.15, 101.6, 38.1, 2.5, 12.0),
        Sheet("roll50x30", 50.0, 30.0, 1, 1, 50.0, 30.0, 0.0, 0.0, 50.0, 30.0, 1.5, 7.5),
    )
}
LAYOUTS = tuple(SHEETS)

# One print job's cap: 2,000 labels is 84 A4 sheets, two large deliveries; a whole district (10,000
# devices) is printed school by school, which is also how the labels are handed out.
MAX_LABELS = 2000


def qr_payload(content: LabelContent, asset_tag: str, device_id: int, base_url: str) -> str:
    """The text a label's QR code carries."""
    if content is LabelContent.TAG:
        return asset_tag
    return f"{base_url.rstrip('/')}/devices/{device_id}"
