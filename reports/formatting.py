"""How money and moments are written for people and files: one home for each.

Costs are kept at full precision (reports/spend/pricing.py); only what is shown or written out
is rounded to cents, here, and never fed back into sums.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


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
