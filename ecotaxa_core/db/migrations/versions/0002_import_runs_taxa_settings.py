"""import runs, taxon rank and status, project settings

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('import_runs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=1024), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('committed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('import_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_import_runs_project_id'), ['project_id'], unique=False)

    op.create_table('imported_files',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('n_rows', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['import_runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('imported_files', schema=None) as batch_op:
        batch_op.create_index('ix_imported_files_project_sha', ['project_id', 'sha256'], unique=False)

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('settings', sa.JSON(), nullable=False, server_default='{}'))

    with op.batch_alter_table('taxa', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rank', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('aphia_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('deprecated', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('merged_into_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_taxa_merged_into_id', 'taxa', ['merged_into_id'], ['id'])



def downgrade() -> None:
    with op.batch_alter_table('taxa', schema=None) as batch_op:
        batch_op.drop_constraint('fk_taxa_merged_into_id', type_='foreignkey')
        batch_op.drop_column('merged_into_id')
        batch_op.drop_column('deprecated')
        batch_op.drop_column('aphia_id')
        batch_op.drop_column('rank')

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('settings')

    with op.batch_alter_table('imported_files', schema=None) as batch_op:
        batch_op.drop_index('ix_imported_files_project_sha')

    op.drop_table('imported_files')
    with op.batch_alter_table('import_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_import_runs_project_id'))

    op.drop_table('import_runs')
