"""Per-project roles and the administrator flag decide what a user may do."""

import pytest

from ecotaxa_core.db.models import Role
from ecotaxa_core.errors import PermissionDenied, ProjectNotFound
from ecotaxa_core.projects import create_project, set_member
from ecotaxa_core.rights import Action, require, user_can
from ecotaxa_core.users import create_user


def test_roles_and_admin(instance, admin):
    with instance.sessions.begin() as s:
        p = create_project(s, "rights")
        users = {role: create_user(s, f"{role.value}@x.org", role.value) for role in Role}
        for role, user in users.items():
            set_member(s, p.id, user.id, role)
        outsider = create_user(s, "out@x.org", "outsider")
        expected = {
            Role.VISITOR: {Action.VIEW},
            Role.ANNOTATOR: {Action.VIEW, Action.ANNOTATE},
            Role.MANAGER: {Action.VIEW, Action.ANNOTATE, Action.IMPORT, Action.MANAGE,
                           Action.ADMINISTRATE},
        }
        for role, user in users.items():
            assert {a for a in Action if user_can(s, user.id, p.id, a)} == expected[role], role
        assert not any(user_can(s, outsider.id, p.id, a) for a in Action)
        assert all(user_can(s, admin.id, p.id, a) for a in Action)
        require(s, users[Role.MANAGER].id, p.id, "manage")
        with pytest.raises(PermissionDenied, match="annotator@x.org may not manage"):
            require(s, users[Role.ANNOTATOR].id, p.id, Action.MANAGE)
        users[Role.MANAGER].active = False
        s.flush()
        assert not user_can(s, users[Role.MANAGER].id, p.id, Action.VIEW)
        assert not user_can(s, 999999, p.id, Action.VIEW)
        with pytest.raises(ProjectNotFound):
            require(s, admin.id, 999999, Action.VIEW)
