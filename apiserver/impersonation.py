"""`Impersonate-User` / `Impersonate-Group` (kubectl --as, --as-group), as kube-apiserver checks them.

A user may act as another only with the `impersonate` verb on users (and groups), which auth.authorize
grants to administrators alone; anyone else is refused with kube-apiserver's 403. The impersonated user
has exactly the groups asked for, and `system:authenticated`. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from podnet.apiserver import status
from podnet.apiserver.auth import AUTHENTICATED_GROUP, User, authorize
from podnet.apiserver.status import ApiError

USER_HEADER = "Impersonate-User"
GROUP_HEADER = "Impersonate-Group"
UID_HEADER = "Impersonate-Uid"


def _forbidden(user: User, resource: str, name: str) -> ApiError:
    message = (f'{resource} "{name}" is forbidden: User "{user.name}" cannot impersonate resource "{resource}" '
               'in API group "" at the cluster scope')
    return ApiError(status.status(403, "Forbidden", message, {"name": name, "kind": resource}))


def impersonate(user: User, headers: Mapping[str, str], groups: list[str]) -> User:
    """The user a request acts as: `user` itself without impersonation headers. `groups` are every
    Impersonate-Group header's value (a header may repeat)."""
    name = headers.get(USER_HEADER)
    if name is None:
        if groups or headers.get(UID_HEADER) is not None:
            raise status.bad_request("requested impersonation of groups or a uid without impersonating a user")
        return user
    if not authorize(user, "impersonate", None, namespaced=False):  # users and groups alike
        raise _forbidden(user, "users", name)
    return User(name, headers.get(UID_HEADER, ""), (*groups, AUTHENTICATED_GROUP))
