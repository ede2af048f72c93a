"""The default price book: an example, labelled as such on every page (OSAI publishes no prices)."""

from datetime import UTC, datetime
from decimal import Decimal

from django.db import migrations

EXAMPLE_NAME = "Example price book"
EXAMPLE_RATES = {
    "training_8gb_per_hour": Decimal("1.20"),
    "training_16gb_per_hour": Decimal("2.10"),
    "conversion_8gb_per_hour": Decimal("0.60"),
    "conversion_16gb_per_hour": Decimal("1.05"),
    "prediction_8gb_per_hour": Decimal("0.40"),
    "prediction_16gb_per_hour": Decimal("0.70"),
    "manipulation_per_hour": Decimal("0.25"),
    "device_rental_per_hour": Decimal("0.90"),
    "image_storage_per_gb_month": Decimal("0.08"),
    "model_storage_per_gb_month": Decimal("0.10"),
}


def add_example(apps, schema_editor):
    PriceBook = apps.get_model("reports", "PriceBook")
    PriceBookVersion = apps.get_model("reports", "PriceBookVersion")
    # Only the first book becomes the default: an operator who already set one keeps theirs.
    has_default = PriceBook.objects.filter(is_default=True).exists()
    book, _ = PriceBook.objects.get_or_create(
        name=EXAMPLE_NAME,
        defaults={"currency": "EUR", "is_example": True, "is_default": not has_default},
    )
    PriceBookVersion.objects.get_or_create(
        price_book=book,
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        defaults={"note": "Example rates, not OSAI's prices.", **EXAMPLE_RATES},
    )


def remove_example(apps, schema_editor):
    PriceBook = apps.get_model("reports", "PriceBook")
    Report = apps.get_model("reports", "Report")
    # PROTECT on Report.price_book: leave the book if reports still point at it.
    book = PriceBook.objects.filter(name=EXAMPLE_NAME, is_example=True).first()
    if book is not None and not Report.objects.filter(price_book=book).exists():
        book.delete()


class Migration(migrations.Migration):
    dependencies = [("reports", "0002_reconciler_schedule")]

    operations = [migrations.RunPython(add_example, remove_example)]
