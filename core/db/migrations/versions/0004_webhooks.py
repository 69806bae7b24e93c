"""webhooks: endpoints, the event outbox, deliveries

Revision ID: 0004_webhooks
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import core.db.models


revision = '0004_webhooks'
down_revision = '0003_money'
branch_labels = None
depends_on = None

_TS = core.db.models.UTCDateTime()


def upgrade() -> None:
    op.create_table('webhook_endpoints',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=False),
    sa.Column('secret', sa.String(length=100), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('disabled_reason', sa.String(length=500), nullable=True),
    sa.Column('consecutive_failures', sa.Integer(), nullable=False),
    sa.Column('created_at', _TS, nullable=False),
    sa.Column('deleted_at', _TS, nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id']),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_webhook_endpoints_account_id', 'webhook_endpoints', ['account_id'])
    op.create_table('webhook_events',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('created_at', _TS, nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id']),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_webhook_events_account_id', 'webhook_events', ['account_id'])
    op.create_table('webhook_deliveries',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('event_id', sa.String(length=40), nullable=False),
    sa.Column('endpoint_id', sa.String(length=40), nullable=False),
    sa.Column('order_key', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', _TS, nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('created_at', _TS, nullable=False),
    sa.Column('delivered_at', _TS, nullable=True),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id']),
    sa.ForeignKeyConstraint(['event_id'], ['webhook_events.id']),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('id')
    )
    op.create_index('ix_webhook_deliveries_pending', 'webhook_deliveries', ['status', 'seq'])
    op.create_index('ix_webhook_deliveries_endpoint', 'webhook_deliveries', ['endpoint_id', 'seq'])


def downgrade() -> None:
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_events')
    op.drop_table('webhook_endpoints')
