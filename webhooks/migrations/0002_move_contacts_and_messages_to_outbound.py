# Contact and InboundMessage now live in `outbound` (its migration 0003, which this one follows). Only Django's
# state forgets them here: the tables stay, and outbound's models use them under the same names.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0001_initial'),
        ('outbound', '0003_move_contacts_and_messages'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.DeleteModel(name='InboundMessage'),
                migrations.DeleteModel(name='Contact'),
            ],
        ),
    ]
