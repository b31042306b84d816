"""`Impersonate-User` / `Impersonate-Group` (kubectl --as, --as-group), as kube-apiserver checks them.

A user may act as another only with the `impersonate` verb on that user (`users`, or `serviceaccounts` in
its namespace for `system:serviceaccount:<ns>:<name>`) and on each group asked for, as RBAC grants it;
anyone else is refused with kube-apiserver's 403. The impersonated user has exactly the groups asked for,
and `system:authenticated` (and a service account's groups). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from podnet.apiserver import status
from podnet.apiserver.auth import AUTHENTICATED_GROUP, User
from podnet.apiserver.rbac.authorizer import SERVICE_ACCOUNT_PREFIX, Attributes, Policy, authorize
from podnet.apiserver.status import ApiError

USER_HEADER = "Impersonate-User"
GROUP_HEADER = "Impersonate-Group"
UID_HEADER = "Impersonate-Uid"


def _forbidden(user: User, resource: str, name: str, namespace: str = "") -> ApiError:
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (f'{resource} "{name}" is forbidden: User "{user.name}" cannot impersonate resource "{resource}" '
               f'in API group "" {where}')
    return ApiError(status.status(403, "Forbidden", message, {"name": name, "kind": resource}))


def _require(user: User, policy: Policy, resource: str, name: str, namespace: str = "") -> None:
    if not authorize(user, Attributes("impersonate", namespace, "", resource, name=name), policy).allowed:
        raise _forbidden(user, resource, name, namespace)


def impersonate(user: User, headers: Mapping[str, str], groups: list[str], policy: Policy) -> User:
    """The user a request acts as: `user` itself without impersonation headers. `groups` are every
    Impersonate-Group header's value (a header may repeat)."""
    name = headers.get(USER_HEADER)
    if name is None:
        if groups or headers.get(UID_HEADER) is not None:
            raise status.bad_request("requested impersonation of groups or a uid without impersonating a user")
        return user
    implied: tuple[str, ...] = ()
    account = name.removeprefix(SERVICE_ACCOUNT_PREFIX).split(":") if name.startswith(SERVICE_ACCOUNT_PREFIX) else None
    if account is not None and len(account) == 2:
        _require(user, policy, "serviceaccounts", account[1], account[0])
        implied = ("system:serviceaccounts", f"system:serviceaccounts:{account[0]}")
    else:
        _require(user, policy, "users", name)
    for group in groups:
        _require(user, policy, "groups", group)
    return User(name, headers.get(UID_HEADER, ""), tuple(dict.fromkeys((*groups, *implied, AUTHENTICATED_GROUP))))
