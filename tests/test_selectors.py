import pytest
from hypothesis import given
from hypothesis import strategies as st

from podnet.api import selectors
from podnet.api.selectors import SelectorError, from_label_selector, from_match_labels, parse


@pytest.mark.parametrize(
    "text, labels, expected",
    [
        ("", {"a": "b"}, True),
        ("a=b", {"a": "b"}, True),
        ("a==b", {"a": "b"}, True),
        ("a=b", {"a": "c"}, False),
        ("a!=b", {}, True),  # != matches objects without the key
        ("a!=b", {"a": "b"}, False),
        ("env in (prod, staging)", {"env": "staging"}, True),
        ("env in (prod)", {}, False),
        ("env notin (prod)", {}, True),
        ("env notin (prod)", {"env": "prod"}, False),
        ("tier", {"tier": ""}, True),
        ("!tier", {"tier": "x"}, False),
        ("!tier", {}, True),
        ("a=b,c in (d,e),!f", {"a": "b", "c": "e"}, True),
        ("a=b,c in (d,e),!f", {"a": "b", "c": "e", "f": "1"}, False),
        ("example.com/app=web", {"example.com/app": "web"}, True),
        ("a=", {"a": ""}, True),
    ],
)
def test_string_selectors_match_as_kubernetes_does(text, labels, expected):
    assert parse(text).matches(labels) is expected


@pytest.mark.parametrize("text", ["a=b=c", "a in (b", "in (a)", "a in ()", "-a=b", "a=b,", "a in (b,,c)", "a=-b"])
def test_bad_string_selectors_are_rejected(text):
    with pytest.raises(SelectorError):
        parse(text)


def test_object_selector_and_its_edge_cases():
    sel = from_label_selector(
        {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}
    )
    assert sel.matches({"app": "web"})
    assert sel.matches({"app": "web", "env": "prod"})
    assert not sel.matches({"app": "web", "env": "dev"})
    assert from_label_selector({}).matches({"anything": "x"})
    assert not from_label_selector(None).matches({})
    assert not from_match_labels({}).matches({"a": "b"})
    with pytest.raises(SelectorError):
        from_label_selector({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})
    with pytest.raises(SelectorError):
        from_label_selector({"matchExpressions": [{"key": "a", "operator": "Like"}]})


@given(st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.from_regex(r"[a-z0-9]{0,5}", fullmatch=True)))
def test_equality_selector_of_an_objects_own_labels_matches_it(labels):
    text = ",".join(f"{k}={v}" for k, v in labels.items())
    assert parse(text).matches(labels)
    assert from_label_selector({"matchLabels": labels}).matches(labels)


@pytest.mark.parametrize(
    ("selector", "text"),
    [
        ({"matchLabels": {"tier": "front", "app": "web"}}, "app=web,tier=front"),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod", "dev"]},
                               {"key": "app", "operator": "In", "values": ["web"]}]}, "app in (web),env notin (dev,prod)"),
        ({"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}, {"key": "a", "operator": "Exists"}]}, "a,!b"),
        ({}, ""),
    ],
)
def test_label_selector_prints_as_kubernetes_prints_it(selector, text):
    compiled = selectors.from_label_selector(selector)
    assert selectors.to_string(compiled) == text
    assert selectors.parse(text) == selectors.Selector(tuple(sorted(compiled.requirements, key=lambda r: r.key)))
