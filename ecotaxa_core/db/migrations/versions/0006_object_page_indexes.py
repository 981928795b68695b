"""indexes for the validation page's first pages: a category sorted by score or last change

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('objects', schema=None) as batch_op:
        batch_op.create_index('ix_objects_project_taxon_score',
                              ['project_id', 'taxon_id', 'score'], unique=False)
        batch_op.create_index('ix_objects_project_taxon_annotated',
                              ['project_id', 'taxon_id', 'annotation_date'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('objects', schema=None) as batch_op:
        batch_op.drop_index('ix_objects_project_taxon_annotated')
        batch_op.drop_index('ix_objects_project_taxon_score')
