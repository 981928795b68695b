"""PostgreSQL: indexes in the page's order (score DESC NULLS LAST, id), whole project and per category

PostgreSQL sorts NULLs last in ascending indexes, so their backward scan gives
"highest first, unscored first"; the page wants unscored last. SQLite needs
nothing: its NULLs sort first, and the ascending indexes of 0006 serve.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index('ix_objects_project_score_desc', 'objects',
                    ['project_id', sa.text('score DESC NULLS LAST'), 'id'])
    op.create_index('ix_objects_project_taxon_score_desc', 'objects',
                    ['project_id', 'taxon_id', sa.text('score DESC NULLS LAST'), 'id'])


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index('ix_objects_project_taxon_score_desc', table_name='objects')
    op.drop_index('ix_objects_project_score_desc', table_name='objects')
