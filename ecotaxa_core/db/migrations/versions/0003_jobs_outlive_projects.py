"""jobs outlive their project: project_id SET NULL on delete, project_ref kept

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# SQLite's foreign keys have no name; batch mode names the reflected one with this.
_CONVENTION = {"fk": "fk_%(table_name)s_%(column_0_name)s"}


def _project_fk_name() -> str:
    """The name of jobs.project_id's foreign key (PostgreSQL named it jobs_project_id_fkey)."""
    for fk in sa.inspect(op.get_bind()).get_foreign_keys('jobs'):
        if fk['constrained_columns'] == ['project_id']:
            return fk['name'] or 'fk_jobs_project_id'
    raise RuntimeError("jobs.project_id has no foreign key to replace")


def _swap_project_fk(ondelete: str) -> None:
    name = _project_fk_name()
    with op.batch_alter_table('jobs', schema=None, naming_convention=_CONVENTION) as batch_op:
        batch_op.drop_constraint(name, type_='foreignkey')
        batch_op.create_foreign_key('fk_jobs_project_id', 'projects', ['project_id'], ['id'],
                                    ondelete=ondelete)


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('project_ref', sa.Integer(), nullable=True))
    op.execute("UPDATE jobs SET project_ref = project_id")
    _swap_project_fk('SET NULL')


def downgrade() -> None:
    # Jobs of deleted projects (project_id NULL) stay, without their project_ref.
    _swap_project_fk('CASCADE')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('project_ref')
