"""The pure cores of exec and logs: the remote command channel protocol, the commands a virtual pod runs
(agnhost's argument parsing, exit codes and wording) and the CRI log format and selection."""

from __future__ import annotations

import json

import pytest
from podnet.nodeagent.kubelet import channel, commands, logs
from podnet.nodeagent.kubelet.commands import (
    AgnhostConnect,
    Connect,
    Curl,
    Http,
    Local,
    Outcome,
    Ping,
    PodFacts,
    Wget,
)

# ---- the channel protocol --------------------------------------------------------------------------------


def test_frames_carry_the_stream_id_first():
    assert channel.frame(channel.STDOUT, b"hi") == b"\x01hi"
    assert channel.parse_client_message(b"\x00abc") == channel.StdinData(b"abc")
    assert channel.parse_client_message(b"\x00") == channel.StdinData(b"")


def test_v5_close_signal_of_stdin_ends_input_and_others_mean_nothing():
    assert channel.parse_client_message(bytes([255, 0])) == channel.StdinClosed()
    assert channel.parse_client_message(bytes([255, 4])) is None


def test_resize_is_client_go_terminal_size():
    assert channel.parse_client_message(b'\x04{"Width":100,"Height":30}') == channel.Resize(100, 30)


@pytest.mark.parametrize("message", [b"", b"\x01out", b"\x07", bytes([255]), bytes([255, 0, 1]), b"\x04{}",
                                     b'\x04{"Width":-1,"Height":2}', b"\x04not json"])
def test_messages_that_break_the_protocol_are_errors(message):
    with pytest.raises(channel.ChannelError):
        channel.parse_client_message(message)


def test_exit_status_is_what_kubectl_turns_into_its_exit_code():
    assert channel.exit_status(0) == {"metadata": {}, "status": "Success"}
    failure = channel.exit_status(3)
    assert failure["status"] == "Failure" and failure["reason"] == "NonZeroExitCode"
    assert failure["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    frame = channel.status_frame(failure)
    assert frame[0] == channel.ERROR and json.loads(frame[1:]) == failure


# ---- virtual pod commands --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [("1s", 1.0), ("500ms", 0.5), ("1m30s", 90.0), ("0", 0.0), ("1.5s", 1.5)])
def test_go_durations(text, seconds):
    assert commands.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "-1s"])
def test_bad_go_durations(text):
    with pytest.raises(ValueError):
        commands.parse_duration(text)


@pytest.mark.parametrize("argv, expected", [
    (["/agnhost", "connect", "backend:8080", "--timeout=1s", "--protocol=tcp"],
     AgnhostConnect("backend", 8080, "TCP", 1.0)),
    (["agnhost", "connect", "--timeout", "2s", "10.0.0.1:53", "--protocol", "udp"],
     AgnhostConnect("10.0.0.1", 53, "UDP", 2.0)),
    (["/agnhost", "connect", "s:80"], AgnhostConnect("s", 80, "TCP", commands.NO_TIMEOUT)),
    (["/agnhost", "connect", "s:81", "--protocol=udp", "--udp-data=echo x"], AgnhostConnect("s", 81, "UDP", commands.NO_TIMEOUT, "echo x")),
    (["http", "http://web/hostname"], Http("http://web/hostname")),
    (["connect", "web:80", "--udp", "--timeout", "2"], Connect("web", 80, "UDP", 2.0)),
    (["ping", "10.244.1.2", "--count=1"], Ping("10.244.1.2", 1)),
    (["hostname"], Local("hostname")),
    (["cat", "/etc/resolv.conf"], Local("/etc/resolv.conf")),
    (["/agnhost", "dns-server-list"], Local("dns-server-list")),
])
def test_commands_parse(argv, expected):
    assert commands.parse(argv) == expected


@pytest.mark.parametrize("argv, code, stderr", [
    (["/agnhost", "connect"], 1, "Error: accepts 1 arg(s), received 0\n"),
    (["/agnhost", "connect", "backend"], 1, "UNKNOWN: address backend: missing port in address\n"),
    (["/agnhost", "connect", "b:80", "--timeout=soon"], 1, 'Error: time: invalid duration "soon"\n'),
    (["/agnhost", "connect", "b:80", "--protocol=sctp"], 1, "Unsupported protocol\nsctp\n"),
    (["/agnhost", "connect", "b:80", "--bogus"], 1, "Error: unknown flag: --bogus\n"),
    (["/agnhost", "serve-hostname"], 1, 'Error: unknown command "serve-hostname" for "agnhost"\nRun \'agnhost --help\' for usage.\n'),
    (["bash"], 127, 'exec: "bash": executable file not found in $PATH\n'),
    (["cat", "/etc/passwd"], 1, "cat: /etc/passwd: No such file or directory\n"),
    (["connect", "nohost"], 1, f"error: connect needs HOST:PORT, not 'nohost'\n{commands.USAGE}\n"),
])
def test_command_lines_that_cannot_run_fail_at_once(argv, code, stderr):
    assert commands.parse(argv) == Outcome(stderr=stderr.encode(), code=code)


@pytest.mark.parametrize("protocol, result, stderr", [
    ("TCP", {"ok": True}, ""),
    ("TCP", {"ok": False, "reason": "timed out after 1s"}, "TIMEOUT\n"),
    ("TCP", {"ok": False, "reason": "connection refused"}, "REFUSED\n"),
    ("TCP", {"ok": False, "reason": "could not resolve host nope: NXDOMAIN"}, "DNS: lookup nope: no such host\n"),
    ("TCP", {"ok": False, "reason": "connection reset by peer"}, "OTHER: dial tcp nope:80: connection reset by peer\n"),
    ("UDP", {"ok": False, "reason": "timed out waiting for a reply"}, "TIMEOUT: read udp nope:80: i/o timeout\n"),
    ("UDP", {"ok": False, "reason": "connection refused (port unreachable)"}, "REFUSED: read udp nope:80: connection refused\n"),
])
def test_agnhost_connect_reports_as_agnhost(protocol, result, stderr):
    outcome = AgnhostConnect("nope", 80, protocol, 1.0).render(result)
    assert outcome == Outcome(stderr=stderr.encode(), code=1 if stderr else 0)


@pytest.mark.parametrize("argv, expected", [
    (["curl", "-sS", "-m", "2", "http://web:8080/hostname"], Curl("http://web:8080/hostname", 2.0, silent=True, show_error=True)),
    (["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "web"], Curl("web", commands.NO_TIMEOUT, silent=True, discard=True, write_out="%{http_code}")),
    (["curl", "--fail", "--max-time=1", "--connect-timeout", "0.5", "web"], Curl("web", 0.5, fail_on_error=True)),
])
def test_curl_parses_the_options_probes_use(argv, expected):
    assert commands.parse(argv) == expected


@pytest.mark.parametrize("argv, code, first_line", [
    (["curl"], 2, "curl: no URL specified!"),
    (["curl", "-v", "web"], 2, "curl: option -v: is unknown"),
    (["curl", "-m"], 2, "curl: option -m: requires parameter"),
    (["curl", "-o", "/tmp/x", "web"], 23, "curl: (23) Failure writing output to destination: /tmp/x is not writable"),
])
def test_curl_command_lines_that_cannot_run(argv, code, first_line):
    outcome = commands.parse(argv)
    assert outcome.code == code and outcome.stderr.decode().splitlines()[0] == first_line


@pytest.mark.parametrize("curl, result, expected", [
    (Curl("web:8080/hostname"), {"ok": True, "status": 200, "reason": "OK", "body": b"web-1"}, Outcome(b"web-1")),
    (Curl("web", silent=True, discard=True, write_out="%{http_code}\\n"),
     {"ok": False, "status": 404, "reason": "Not Found", "body": b"404 page not found\n"}, Outcome(b"404\n")),
    (Curl("web", fail_on_error=True), {"ok": False, "status": 503, "reason": "x", "body": b""},
     Outcome(stderr=b"curl: (22) The requested URL returned error: 503\n", code=22)),
    (Curl("nope:80"), {"ok": False, "reason": "could not resolve host nope: NXDOMAIN"},
     Outcome(stderr=b"curl: (6) Could not resolve host: nope\n", code=6)),
    (Curl("web:81", silent=True), {"ok": False, "reason": "connection refused"}, Outcome(code=7)),
    (Curl("web:81", silent=True, show_error=True), {"ok": False, "reason": "connection refused"},
     Outcome(stderr=b"curl: (7) Failed to connect to web port 81: Connection refused\n", code=7)),
    (Curl("web", 1.0), {"ok": False, "reason": "timed out after 1s"},
     Outcome(stderr=b"curl: (28) Connection timed out after 1000 milliseconds\n", code=28)),
])
def test_curl_reports_as_curl(curl, result, expected):
    assert curl.render(result) == expected


@pytest.mark.parametrize("argv, expected", [
    (["wget", "-qO-", "http://web"], Wget("http://web", commands.NO_TIMEOUT, quiet=True)),
    (["wget", "--spider", "--timeout=1", "nginx"], Wget("nginx", 1.0, spider=True)),
    (["wget", "-q", "-O", "-", "-T", "2", "web:8080/hostname"], Wget("web:8080/hostname", 2.0, quiet=True)),
    (["wget", "web:8080/hostname"], Outcome(stderr=b"wget: can't open 'hostname': Read-only file system\n", code=1)),
])
def test_wget_parses_as_busybox(argv, expected):
    assert commands.parse(argv) == expected


def test_wget_reports_as_busybox():
    spider = Wget("nginx", 1.0, spider=True)
    assert spider.render({"ok": True, "status": 200, "reason": "OK", "body": b""}) == Outcome(
        stderr=b"Connecting to nginx:80\nremote file exists\n")
    assert spider.render({"ok": False, "reason": "timed out after 1s"}) == Outcome(
        stderr=b"Connecting to nginx:80\nwget: download timed out\n", code=1)
    quiet = Wget("web:8080", quiet=True)
    assert quiet.render({"ok": True, "status": 200, "reason": "OK", "body": b"hi"}) == Outcome(b"hi")
    assert quiet.render({"ok": False, "status": 404, "reason": "Not Found", "body": b""}) == Outcome(
        stderr=b"wget: server returned error: HTTP/1.1 404 Not Found\n", code=1)
    assert quiet.render({"ok": False, "reason": "could not resolve host web: NXDOMAIN"}) == Outcome(
        stderr=b"wget: bad address 'web:8080'\n", code=1)


def test_agnhost_connect_over_udp_sends_its_data_line():
    method, params = AgnhostConnect("dns", 53, "UDP", 1.0, "hostname").rpc()
    assert method == "pod.connect" and params["payload"] == b"hostname\n" and params["protocol"] == "UDP"


def test_local_commands_answer_from_the_pod():
    pod = PodFacts("web-1", "shop", "web-1", "10.244.1.5")
    assert Local("hostname").answer(pod).stdout == b"web-1\n"
    resolv = Local("/etc/resolv.conf").answer(pod).stdout.decode()
    assert "nameserver 10.96.0.10\n" in resolv and "search shop.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert Local("dns-server-list").answer(pod).stdout == b"10.96.0.10\n"
    assert Local("dns-suffix").answer(pod).stdout == b"shop.svc.cluster.local,svc.cluster.local,cluster.local\n"


def test_http_and_ping_render_as_podnet_exec_prints():
    assert Http("http://x/").render({"ok": True, "status": 200, "reason": "OK", "body": b"hi"}) == Outcome(b"hi\n")
    failed = Http("http://x/").render({"ok": False, "status": 404, "reason": "Not Found", "body": b"404 page not found\n"})
    assert failed == Outcome(b"404 page not found\n", b"error: HTTP 404 Not Found\n", 1)
    ping = Ping("10.0.0.1", 1).render({"ok": True, "transmitted": 1, "received": 1, "rtts": [0.001]})
    assert ping.code == 0 and b"1 packets transmitted, 1 received, 0% packet loss" in ping.stdout


# ---- logs ------------------------------------------------------------------------------------------------

T0 = 1_700_000_000.25


def test_a_record_round_trips_through_the_cri_format():
    record = logs.Record(T0, "stderr", b"it broke")
    line = logs.encode(record)
    assert line == b"2023-11-14T22:13:20.250000000Z stderr F it broke\n"
    assert logs.decode(line) == record
    assert logs.decode(b"garbage") is None


def test_writes_become_records_line_by_line_and_long_lines_are_split():
    pending = bytearray()
    assert logs.records_of("stdout", b"one\ntw", T0, pending) == [logs.Record(T0, "stdout", b"one")]
    assert logs.records_of("stdout", b"o\n", T0 + 1, pending) == [logs.Record(T0 + 1, "stdout", b"two")]
    long = logs.records_of("stdout", b"x" * (logs.MAX_RECORD_BYTES + 5) + b"\n", T0, pending)
    assert [(len(r.text), r.partial) for r in long] == [(logs.MAX_RECORD_BYTES, True), (5, False)]
    assert logs.render(long, logs.LogOptions()) == b"x" * (logs.MAX_RECORD_BYTES + 5) + b"\n"


RECORDS = [logs.Record(T0 + i, "stdout", f"line {i}".encode()) for i in range(5)]


@pytest.mark.parametrize("options, expected", [
    (logs.LogOptions(), b"line 0\nline 1\nline 2\nline 3\nline 4\n"),
    (logs.LogOptions(tail_lines=2), b"line 3\nline 4\n"),
    (logs.LogOptions(tail_lines=0), b""),
    (logs.LogOptions(since=T0 + 3), b"line 3\nline 4\n"),
    (logs.LogOptions(limit_bytes=9), b"line 0\nli"),
    (logs.LogOptions(tail_lines=1, timestamps=True), b"2023-11-14T22:13:24.250000000Z line 4\n"),
])
def test_render_selects_as_kubectl_logs_asks(options, expected):
    assert logs.render(RECORDS, options) == expected


def test_options_come_from_the_query():
    options = logs.LogOptions.from_query({"follow": "true", "tailLines": "3", "sinceSeconds": "10", "timestamps": "1"}, T0)
    assert options == logs.LogOptions(follow=True, timestamps=True, tail_lines=3, since=T0 - 10)
    assert logs.LogOptions.from_query({"sinceTime": "2023-11-14T22:13:20Z"}, T0).since == pytest.approx(T0 - 0.25)
    for bad in ({"tailLines": "x"}, {"sinceSeconds": "0"}, {"sinceSeconds": "1", "sinceTime": "2023-11-14T22:13:20Z"},
                {"sinceTime": "yesterday"}):
        with pytest.raises(logs.LogOptionError):
            logs.LogOptions.from_query(bad, T0)


def test_instances_keep_the_current_and_the_previous_and_rotate(tmp_path):
    for instance in range(3):
        writer = logs.LogWriter(logs.begin_instance(tmp_path, instance), max_bytes=200)
        for n in range(6):  # a write at a time, as the shim writes what each read brought
            writer.write([logs.Record(T0, "stdout", f"run {instance} {n}".encode())])
        writer.close()
    assert logs.instances(tmp_path) == [1, 2]
    files = logs.instance_files(tmp_path, 2)
    assert [p.name for p in files] == ["2.log.1", "2.log"]
    kept = [r.text for r in logs.read_records(files)]
    assert kept == [f"run 2 {n}".encode() for n in range(6 - len(kept), 6)] and len(kept) >= 3
