import json
import subprocess
import sys

import pytest

from podnet.api.manifests import ManifestError, load

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
"""


def test_multi_document_yaml_and_lists_are_flattened():
    text = SERVICE + "---\n" + json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}]}
    ) + "\n---\n"
    objects = load(text)
    assert [o["kind"] for o in objects] == ["Service", "Namespace"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a: [", "not valid YAML"),
        ("- 1\n- 2\n", "is not an object"),
        ("kind: Service\n", "needs apiVersion and kind"),
        ("apiVersion: v1\nkind: Gadget\nmetadata: {name: g}\n", 'resource type "Gadget"'),
        ("apiVersion: apps/v1\nkind: Service\nmetadata: {name: g}\n", "for version"),
        ("apiVersion: v1\nkind: Service\nmetadata: {}\n", "metadata.name is required"),
    ],
)
def test_bad_manifests_give_one_clear_error(text, message):
    with pytest.raises(ManifestError, match=message):
        load(text, "f.yaml")


def test_cli_reports_bad_yaml_in_one_line_and_exits_non_zero(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [\n")
    result = subprocess.run(
        [sys.executable, "-m", "podnet", "apply", "-f", str(bad), "--server", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "bad.yaml" in result.stderr
    assert "Traceback" not in result.stderr
