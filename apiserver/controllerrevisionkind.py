"""ControllerRevisions as kube-apiserver validates them (pkg/apis/apps/validation ValidateControllerRevision
and its update): `data` is mandatory and never changes, `revision` is not negative. Pure."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from podnet.apiserver.validation import Errors


def validate_controller_revision(errors: Errors, obj: dict, limits: object) -> None:
    if obj.get("data") is None:
        errors.required("data", "data is mandatory")
    revision = obj.get("revision", 0)
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        errors.invalid("revision", revision, "must be greater than or equal to 0")


def validate_controller_revision_update(errors: Errors, old: dict, new: dict) -> None:
    if old.get("data") != new.get("data"):
        errors.invalid("data", new.get("data"), "field is immutable")
