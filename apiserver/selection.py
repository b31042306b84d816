"""Which objects a list or watch selects: `labelSelector` and `fieldSelector`, as kube-apiserver
parses them. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from podnet.api.kinds import Kind
from podnet.api.selectors import EVERYTHING, Selector, SelectorError, parse

_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
# The field labels each kind supports beyond metadata.name and metadata.namespace (its
# GetAttrs/field label conversion funcs in Kubernetes).
_KIND_FIELDS = {
    "Pod": ("spec.nodeName", "status.phase", "spec.restartPolicy", "spec.schedulerName", "status.podIP"),
    # As the core Event strategy's field set (kubectl describe selects an object's events by these).
    "Event": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
              "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
              "reportingComponent", "source", "type"),
}
# Field labels that name a value elsewhere in the object.
_FIELD_PATHS = {"source": "source.component"}


class FieldSelectorError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    value: str
    negated: bool

    def matches(self, obj: dict) -> bool:
        return (field_value(obj, self.field) == self.value) != self.negated


def field_value(obj: dict, field: str) -> str:
    node: object = obj
    for part in _FIELD_PATHS.get(field, field).split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, str) else ""


def parse_field_selector(text: str | None, kind: Kind) -> tuple[FieldRequirement, ...]:
    if text is None or not text.strip():
        return ()
    supported = _COMMON_FIELDS + _KIND_FIELDS.get(kind.kind, ())
    requirements = []
    for term in text.split(","):
        term = term.strip()
        if "!=" in term:
            field, _, value = term.partition("!=")
            negated = True
        elif "==" in term:
            field, _, value = term.partition("==")
            negated = False
        elif "=" in term:
            field, _, value = term.partition("=")
            negated = False
        else:
            raise FieldSelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        field = field.strip()
        if field not in supported:
            raise FieldSelectorError(f'field label not supported: {field}')
        requirements.append(FieldRequirement(field, value.strip(), negated))
    return tuple(requirements)


@dataclass(frozen=True, slots=True)
class Filter:
    labels: Selector = EVERYTHING
    fields: tuple[FieldRequirement, ...] = ()

    @property
    def everything(self) -> bool:
        return self.labels.empty and not self.fields

    def matches(self, obj: dict) -> bool:
        metadata = obj.get("metadata") or {}
        return self.labels.matches(metadata.get("labels")) and all(r.matches(obj) for r in self.fields)

    def name(self) -> str | None:
        """The one name an equality on metadata.name selects (a watch of a single object)."""
        for r in self.fields:
            if r.field == "metadata.name" and not r.negated:
                return r.value
        return None


def make_filter(label_selector: str | None, field_selector: str | None, kind: Kind) -> Filter:
    """Raises ValueError (SelectorError or FieldSelectorError) with kube-apiserver's wording."""
    try:
        labels = parse(label_selector)
    except SelectorError as e:
        raise SelectorError(f"unable to parse requirement: {e}") from None
    return Filter(labels, parse_field_selector(field_selector, kind))
