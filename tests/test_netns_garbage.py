"""What a restarted agent's garbage collection of pod namespaces keeps (NetnsPods.collect_garbage): the
namespaces recorded in its state directory go, unless a pod holds or claims them, or another node owns them;
and what its shutdown leaves (NetnsPods.close): nothing of its own."""

import uuid

from podnet.nodeagent.pods.netns import NetnsPods

from podnet.netns.names import namespace_name


def test_a_namespace_whose_pod_is_being_attached_is_not_collected(tmp_path):
    # A pod adopted after a restart claims its namespace while it is attached, before it is held: the
    # collection that runs after the first sync must leave that namespace, its processes and state alone.
    node = f"gc{uuid.uuid4().hex[:8]}"  # no namespace of that node exists: only the records are at stake
    adopted, deleted = namespace_name(node, "default", "web"), namespace_name(node, "default", "doomed")
    torn_down, foreign = namespace_name(node, "default", "old"), namespace_name(f"{node}x", "default", "web")
    records = tmp_path / "netns"
    records.mkdir()
    for name in (adopted, deleted, torn_down, foreign):
        (records / f"{name}.json").write_text("{}")
        (records / name).mkdir()  # its containers' logs
    pods = NetnsPods(node, tmp_path, lambda pod, frames: None, lambda key: None)

    pods.collect_garbage({adopted, torn_down})

    assert sorted(p.name for p in records.iterdir()) == sorted(
        [f"{adopted}.json", adopted, f"{torn_down}.json", torn_down, f"{foreign}.json", foreign])
    pods.collect_garbage(set())
    assert sorted(p.name for p in records.iterdir()) == [foreign, f"{foreign}.json"]


def test_shutdown_removes_the_namespaces_of_pods_still_being_torn_down(tmp_path):
    # A pod deleted just before the agent stops is no longer held (its teardown has begun), and the
    # shutdown cancels that teardown: closing must still remove what its state directory records.
    node = f"gc{uuid.uuid4().hex[:8]}"
    leaving, foreign = namespace_name(node, "default", "forced"), namespace_name(f"{node}x", "default", "web")
    records = tmp_path / "netns"
    records.mkdir()
    for name in (leaving, foreign):
        (records / f"{name}.json").write_text("{}")
        (records / name).mkdir()
    pods = NetnsPods(node, tmp_path, lambda pod, frames: None, lambda key: None)

    pods.close()

    assert sorted(p.name for p in records.iterdir()) == [foreign, f"{foreign}.json"]


def test_logs_that_ended_pods_kept_are_collected_after_a_restart(tmp_path):
    # A pod that ended keeps its log directory (its namespace and state gone) until it is deleted; an agent
    # that went away meanwhile no longer knows it, so its collection takes such directories, not another
    # node's, nor a claimed pod's.
    node = f"gc{uuid.uuid4().hex[:8]}"
    ended, claimed = namespace_name(node, "default", "job-1"), namespace_name(node, "default", "web")
    foreign = namespace_name(f"{node}x", "default", "job-1")
    records = tmp_path / "netns"
    records.mkdir()
    for name in (ended, f"{ended}.pod", claimed, foreign):
        (records / name).mkdir()
        (records / name / "main").mkdir()

    NetnsPods(node, tmp_path, lambda pod, frames: None, lambda key: None).collect_garbage({claimed})

    assert sorted(p.name for p in records.iterdir()) == sorted([claimed, foreign])
