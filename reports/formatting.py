"""How money, moments and changes are written for people and files: one home for each.

Costs are kept at full precision (reports/spend/pricing.py); only what is shown or written out
is rounded to cents, here, and never fed back into sums.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")

# A change is a percentage only where one reads (U2): against a base of at least 1 (EUR 1.00,
# 1 GPU-hour, 1 GB-month, 1 image) and within ±999 %. Otherwise both amounts are written.
CHANGE_MIN_BASE = Decimal(1)
CHANGE_MAX_PERCENT = Decimal(999)
CHANGE_FLAT = Decimal("0.0005")  # below 0.05 % either way: "no change"


def to_cents(amount: Decimal) -> Decimal:
    """An amount rounded to cents (half up), for display and for figures people compare."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def money(amount: Decimal | None, currency: str = "") -> str:
    """'EUR 1,234.56', or '1,234.56' without a currency (a minus sign for credits); '' for
    an amount that is not known."""
    if amount is None:
        return ""
    return f"{currency} {to_cents(amount):,.2f}".strip()


def utc_z(moment: datetime | None) -> str:
    """ISO 8601 in UTC with a 'Z' ('2026-12-01T00:00:00Z'), as OSAI writes it; '' for None."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def change_text(
    current: float | Decimal,
    previous: float | Decimal | None,
    versus: str,
    *,
    currency: str = "",
    unit: str = "",
    decimals: int = 2,
    with_base: bool = False,
) -> tuple[str, str]:
    """A change against the period compared with, and its trend ("up", "down", "flat", for the
    colour); ("", "") when the previous figure is unknown. The one rule for every page, table,
    digest and alert (U2):

    - "+12.3 % vs Oct 2026" when the previous figure is at least `CHANGE_MIN_BASE` and the
      change at most `CHANGE_MAX_PERCENT` either way (`with_base` adds the previous amount:
      "+12.3 % vs Oct 2026 (EUR 10.00)");
    - otherwise the amounts: "EUR 26.28, up from EUR 0.09 in Oct 2026" ("down from");
    - "new since Oct 2026" from nothing, "no change" from nothing to nothing, and "no change vs
      Oct 2026" when the amounts are the same as written (or within 0.05 %).

    Money is written with `money` in `currency`; usage (`unit`, such as "GPU-hours") with
    `decimals` places and its unit after the figure.
    """
    if previous is None:
        return "", ""
    if previous == 0:
        return ("no change", "flat") if current == 0 else (f"new since {versus}", "up")
    now, before = Decimal(str(current)), Decimal(str(previous))

    def amount(value: float | Decimal) -> str:
        if unit:
            return f"{value:,.{decimals}f} {unit}"
        return money(Decimal(str(value)), currency)

    trend = "up" if now > before else "down"
    if before >= CHANGE_MIN_BASE:
        ratio = (now - before) / before
        if abs(ratio) < CHANGE_FLAT:
            return f"no change vs {versus}", "flat"
        if abs(ratio) * 100 <= CHANGE_MAX_PERCENT:
            base = f" ({amount(previous)})" if with_base else ""
            return f"{ratio * 100:+.1f} % vs {versus}{base}", trend
    written_now, written_before = amount(current), amount(previous)
    if written_now == written_before:
        return f"no change vs {versus}", "flat"
    return f"{written_now}, {trend} from {written_before} in {versus}", trend
