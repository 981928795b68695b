"""history rows say whether they undo a change; index of a user's changes by moment

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('annotation_history', schema=None) as batch_op:
        batch_op.add_column(sa.Column('action', sa.String(length=16), nullable=True))
        batch_op.create_index('ix_annotation_history_changed_by_at',
                              ['changed_by_id', 'changed_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('annotation_history', schema=None) as batch_op:
        batch_op.drop_index('ix_annotation_history_changed_by_at')
        batch_op.drop_column('action')
