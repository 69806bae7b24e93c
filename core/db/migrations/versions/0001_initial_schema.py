"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 05:30:52.737050
"""
from alembic import op
import sqlalchemy as sa
import core.db.models


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    plans = op.create_table('plans',
    sa.Column('key', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('max_concurrent_sessions', sa.Integer(), nullable=False),
    sa.Column('max_session_seconds', sa.Integer(), nullable=False),
    sa.Column('included_minutes', sa.Integer(), nullable=False),
    sa.Column('avatar_uploads', sa.Integer(), nullable=True),
    sa.Column('allows_url_avatars', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    # The SPEC's plan defaults (operators change them with `avatarctl plans set`).
    op.bulk_insert(plans, [
        {"key": "free", "name": "Free", "max_concurrent_sessions": 1, "max_session_seconds": 5 * 60,
         "included_minutes": 30, "avatar_uploads": 0, "allows_url_avatars": False},
        {"key": "explorer", "name": "Explorer", "max_concurrent_sessions": 5, "max_session_seconds": 60 * 60,
         "included_minutes": 300, "avatar_uploads": 20, "allows_url_avatars": True},
        {"key": "growth", "name": "Growth", "max_concurrent_sessions": 10, "max_session_seconds": 180 * 60,
         "included_minutes": 1000, "avatar_uploads": 60, "allows_url_avatars": True},
        {"key": "pro", "name": "Pro", "max_concurrent_sessions": 20, "max_session_seconds": 240 * 60,
         "included_minutes": 3000, "avatar_uploads": 180, "allows_url_avatars": True},
        {"key": "enterprise", "name": "Enterprise", "max_concurrent_sessions": 50, "max_session_seconds": 240 * 60,
         "included_minutes": 10000, "avatar_uploads": None, "allows_url_avatars": True},
    ])
    op.create_table('accounts',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('plan_key', sa.String(length=32), nullable=False),
    sa.Column('created_at', core.db.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('max_concurrent_sessions', sa.Integer(), nullable=True),
    sa.Column('max_session_seconds', sa.Integer(), nullable=True),
    sa.Column('included_minutes', sa.Integer(), nullable=True),
    sa.Column('avatar_uploads', sa.Integer(), nullable=True),
    sa.Column('admission_seq', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['plan_key'], ['plans.key'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('display_prefix', sa.String(length=16), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('created_at', core.db.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', core.db.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_account_id'), ['account_id'], unique=False)

    op.create_table('avatars',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=True),
    sa.Column('is_public', sa.Boolean(), nullable=False),
    sa.Column('orientation', sa.String(length=8), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=True),
    sa.Column('image_path', sa.String(length=500), nullable=True),
    sa.Column('preview_path', sa.String(length=500), nullable=True),
    sa.Column('rig_path', sa.String(length=500), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', core.db.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', core.db.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('avatars', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_avatars_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_avatars_content_sha256'), ['content_sha256'], unique=False)

    op.create_table('minute_ledger',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('session_id', sa.String(length=40), nullable=False),
    sa.Column('period_start', core.db.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('pack_id', sa.String(length=40), nullable=True),
    sa.Column('minutes', sa.Integer(), nullable=False),
    sa.Column('created_at', core.db.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('minute_ledger', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_account_period', ['account_id', 'period_start'], unique=False)
        batch_op.create_index(batch_op.f('ix_minute_ledger_session_id'), ['session_id'], unique=False)

    op.create_table('minute_packs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('minutes', sa.Integer(), nullable=False),
    sa.Column('remaining', sa.Integer(), nullable=False),
    sa.Column('purchased_at', core.db.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('minute_packs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_minute_packs_account_id'), ['account_id'], unique=False)

    op.create_table('sessions',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('avatar_id', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('end_reason', sa.String(length=32), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('aspect_ratio', sa.String(length=8), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('room_platform', sa.String(length=16), nullable=False),
    sa.Column('session_token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', core.db.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started_at', core.db.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ended_at', core.db.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('expiration', core.db.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('worker_name', sa.String(length=80), nullable=True),
    sa.Column('placement_group_name', sa.String(length=80), nullable=True),
    sa.Column('node_id', sa.String(length=64), nullable=True),
    sa.Column('last_heartbeat_at', core.db.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('billed_minutes', sa.Integer(), nullable=True),
    sa.Column('billed_from_included', sa.Integer(), nullable=True),
    sa.Column('billed_from_purchased', sa.Integer(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.create_index('ix_sessions_account_created', ['account_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_sessions_status', ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_sessions_status')
        batch_op.drop_index('ix_sessions_account_created')

    op.drop_table('sessions')
    with op.batch_alter_table('minute_packs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_minute_packs_account_id'))

    op.drop_table('minute_packs')
    with op.batch_alter_table('minute_ledger', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_minute_ledger_session_id'))
        batch_op.drop_index('ix_ledger_account_period')

    op.drop_table('minute_ledger')
    with op.batch_alter_table('avatars', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_avatars_content_sha256'))
        batch_op.drop_index(batch_op.f('ix_avatars_account_id'))

    op.drop_table('avatars')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_account_id'))

    op.drop_table('api_keys')
    op.drop_table('accounts')
    op.drop_table('plans')
