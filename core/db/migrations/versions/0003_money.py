"""money: rate limits per plan and account, the create key of a session, idempotency keys

Revision ID: 0003_money
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import core.db.models


revision = '0003_money'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('plans') as batch:
        batch.add_column(sa.Column('rate_limit_per_minute', sa.Integer(), nullable=True))
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('rate_limit_per_minute', sa.Integer(), nullable=True))
    with op.batch_alter_table('sessions') as batch:
        batch.add_column(sa.Column('create_key', sa.String(length=64), nullable=True))
        batch.create_index('ix_sessions_create_key', ['create_key'])
    op.create_table('idempotency_keys',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('route', sa.String(length=64), nullable=False),
    sa.Column('idem_key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('locked_until', core.db.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', core.db.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', core.db.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'route', 'idem_key', name='uq_idempotency_key')
    )
    op.create_index('ix_idempotency_keys_expires_at', 'idempotency_keys', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_idempotency_keys_expires_at', table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    with op.batch_alter_table('sessions') as batch:
        batch.drop_index('ix_sessions_create_key')
        batch.drop_column('create_key')
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('rate_limit_per_minute')
    with op.batch_alter_table('plans') as batch:
        batch.drop_column('rate_limit_per_minute')
