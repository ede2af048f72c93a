"""Sharing ends with membership: drop the sharing of connections with teams their owner left.

Until now sharing outlived membership (it only stopped counting), so a person removed from a
team could not withdraw it, and being added again re-exposed it all (M1).
"""

from django.db import migrations


def withdraw(apps, schema_editor):
    Connection = apps.get_model("reports", "Connection")
    Membership = apps.get_model("reports", "Membership")
    through = Connection.shared_with_teams.through
    members = set(Membership.objects.values_list("team_id", "user_id"))
    stale = [
        row.pk
        for row in through.objects.select_related("connection")
        if (row.team_id, row.connection.owner_id) not in members
    ]
    through.objects.filter(pk__in=stale).delete()


class Migration(migrations.Migration):
    dependencies = [("reports", "0004_team_price_book_and_skipped_connections")]

    operations = [migrations.RunPython(withdraw, migrations.RunPython.noop)]
