"""Find every message marked for translation in the package, and the ones a locale has not translated yet.

    python -m fleet.i18n.extract                  # list messages missing from zh_CN, with where they are
    python -m fleet.i18n.extract --add console    # append them, untranslated, to zh_CN/console.po to fill in

Python sources are read for `_("...")` and `N_("...")`; Jinja templates (any `templates/` folder) for
`{% trans %}...{% endtrans %}` and `_("...")`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from fleet.i18n import LOCALE_DIR, catalog

PACKAGE = Path(__file__).resolve().parent.parent
METHODS = [
    ("**/templates/**.html", "jinja2.ext:babel_extract"),
    ("**/templates/**.txt", "jinja2.ext:babel_extract"),
    ("**.py", "python"),
]
KEYWORDS = {"_": None, "N_": None, "gettext": None, "ngettext": (1, 2)}


def marked(root: Path = PACKAGE) -> dict[str, list[str]]:
    """Every marked message id -> the places (file:line) it is used."""
    found: dict[str, list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(root), method_map=METHODS, keywords=KEYWORDS, options_map={"**/templates/**": {"trimmed": "true"}}
    ):
        ids = message if isinstance(message, tuple) else (message,)
        for mid in ids:
            if mid:
                found.setdefault(mid, []).append(f"{filename}:{lineno}")
    return found


def missing(locale: str = "zh_CN", root: Path = PACKAGE) -> dict[str, list[str]]:
    have = catalog(locale)
    return {mid: where for mid, where in marked(root).items() if mid not in have}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--locale", default="zh_CN")
    parser.add_argument("--add", metavar="AREA", help="append the missing messages to <locale>/<AREA>.po")
    args = parser.parse_args(argv)
    gone = missing(args.locale)
    for mid, where in sorted(gone.items()):
        print(f"{where[0]}: {mid!r}")
    if args.add and gone:
        path = LOCALE_DIR / args.locale / "LC_MESSAGES" / f"{args.add}.po"
        if path.exists():
            with path.open("rb") as fh:
                cat = read_po(fh, locale=args.locale)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            cat = Catalog(locale=args.locale, project="LabFleet", domain=args.add)
        for mid, where in gone.items():
            cat.add(mid, "", locations=[(w.rsplit(":", 1)[0], int(w.rsplit(":", 1)[1])) for w in where[:3]])
        with path.open("wb") as fh:
            write_po(fh, cat, width=0, sort_output=True)
        print(f"added {len(gone)} messages to {path}", file=sys.stderr)
    return 1 if gone else 0


if __name__ == "__main__":
    raise SystemExit(main())
