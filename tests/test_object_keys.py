"""The one object key every cache and index uses (podnet/api/keys.py): `namespace/name`, the bare name for a
cluster-scoped object, whichever way its namespace is missing."""

from podnet.api.keys import namespace_and_name, namespaced_key, object_key


def _obj(**meta) -> dict:
    return {"metadata": meta}


def test_a_namespaced_object_is_namespace_slash_name():
    assert object_key(_obj(namespace="shop", name="web")) == "shop/web"
    assert namespace_and_name(_obj(namespace="shop", name="web")) == ("shop", "web")
    assert namespaced_key("shop", "web") == "shop/web"


def test_a_missing_or_empty_namespace_means_cluster_scoped_one_way():
    for obj in (_obj(name="node-1"), _obj(name="node-1", namespace=""), _obj(name="node-1", namespace=None)):
        assert object_key(obj) == "node-1"
        assert namespace_and_name(obj) == ("", "node-1")
    assert namespaced_key(None, "node-1") == namespaced_key("", "node-1") == "node-1"
