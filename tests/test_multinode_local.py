"""Multinode jobs run locally (`lava-dispatch run`): every role in-process on local-shell boards."""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml
from conftest import run_job

pytestmark = pytest.mark.usefixtures("no_leftovers")


def results_of(run, member):
    return yaml.safe_load((run.output_dir / member / "results.yaml").read_text())


def log_of(run, member):
    return [r["msg"] for r in yaml.safe_load((run.output_dir / member / "output.yaml").read_text())
            if isinstance(r["msg"], str)]


def case(results, name):
    return next(r for r in results if r["case"] == name)


SERVER_CLIENT = textwrap.dedent("""\
    job_name: server-client
    timeouts: {job: {minutes: 2}}
    protocols:
      lava-multinode:
        roles:
          server: {device_type: local-shell, count: 1}
          client: {device_type: local-shell, count: 1}
        timeout: {seconds: 60}
    actions:
      - boot:
          role: server
          method: minimal
      - boot:
          role: client
          method: minimal
          protocols:
            lava-multinode:
              - request: lava-start
                expect_role: server
                timeout: {seconds: 60}
              - api: lava-wait
                id: ipv4
                key: ipaddr
      - test:
          role: server
          protocols:
            lava-multinode:
              api: lava-start
              roles: [client]
          definitions:
            - from: inline
              name: server
              path: s.yaml
              repository:
                metadata: {name: server}
                run:
                  steps:
                    - lava-send ipv4 ipaddr=10.0.2.15
                    - lava-test-case sent --result pass
      - test:
          role: client
          definitions:
            - from: inline
              name: client
              path: c.yaml
              repository:
                metadata: {name: client}
                run:
                  steps:
                    - lava-test-case address-from-deploy --shell test "$ipaddr" = 10.0.2.15
                    - lava-wait ipv4
                    - lava-test-case address-from-wait --shell grep -q server-1:ipaddr=10.0.2.15 $TMPDIR/lava_multi_node_cache.txt
                    - lava-test-case role --shell test "$(lava-role)" = client
                    - lava-test-case group --shell sh -c 'lava-group | grep -q "server-1.server"'
    """)


def test_lava_start_delays_the_client_until_the_server_test_ends(tmp_path):
    run = run_job(tmp_path, SERVER_CLIENT, "local01")
    assert run.code == 0, run.stdout + run.stderr
    client = results_of(run, "client-1")
    for name in ("address-from-deploy", "address-from-wait", "role", "group"):
        assert case(client, name)["result"] == "pass", name
    assert case(results_of(run, "server-1"), "sent")["result"] == "pass"
    messages = log_of(run, "client-1")
    assert any("the start of role 'client' is delayed until role 'server'" in m for m in messages)
    started = messages.index("lava-start: role 'client' started")
    first_action = next(i for i, m in enumerate(messages) if m.startswith("start: 1 "))
    assert started < first_action
    assert "lava-start: starting role(s) client" in log_of(run, "server-1")


BARRIERS = 50


def test_four_members_run_fifty_barriers_and_wait_all_rounds(tmp_path):
    steps = []
    for n in range(BARRIERS):
        steps += [f"lava-sync barrier-{n}", f"lava-send round-{n} from=$(lava-self) n={n}",
                  f"lava-wait-all round-{n}",
                  f"test $(grep -c :n={n} $TMPDIR/lava_multi_node_cache.txt) -eq 3 || lava-test-case round-{n} --result fail"]
    steps.append("lava-test-case all-rounds --result pass")
    step_text = "".join(f"                - {json.dumps(step)}\n" for step in steps)
    job = textwrap.dedent("""\
        job_name: barriers
        timeouts: {job: {minutes: 5}}
        protocols:
          lava-multinode:
            roles:
              node: {device_type: local-shell, count: 4}
            timeout: {seconds: 60}
        actions:
          - boot: {role: node, method: minimal}
          - test:
              role: node
              timeout: {minutes: 4}
              definitions:
                - from: inline
                  name: sync
                  path: s.yaml
                  repository:
                    metadata: {name: sync}
                    run:
                      steps:
        """) + step_text
    run = run_job(tmp_path, job, "local01")
    assert run.code == 0, run.stdout + run.stderr
    for member in ("node-1", "node-2", "node-3", "node-4"):
        results = results_of(run, member)
        assert [r["case"] for r in results if r["suite"] != "lava"] == ["all-rounds"], member
        messages = log_of(run, member)
        assert sum(1 for m in messages if m.startswith("multinode: lava-sync")) == BARRIERS
        assert sum(1 for m in messages if m.startswith("multinode: lava-wait-all")) == BARRIERS


def test_a_missing_member_makes_the_others_fail_with_a_clear_timeout(tmp_path):
    job = textwrap.dedent("""\
        job_name: missing-member
        timeouts: {job: {minutes: 2}}
        protocols:
          lava-multinode:
            roles:
              good: {device_type: local-shell, count: 2}
              broken: {device_type: local-shell, count: 1}
            timeout: {seconds: 5}
        actions:
          - boot: {role: [good, broken], method: minimal}
          - test:
              role: [good, broken]
              definitions:
                - from: inline
                  name: meet
                  path: m.yaml
                  repository:
                    metadata: {name: meet}
                    run:
                      steps:
                        - "if [ $(lava-role) = broken ]; then lava-test-raise board-died; fi"
                        - lava-sync meet
        """)
    run = run_job(tmp_path, job, "local01")
    assert run.code == 1
    for member in ("good-1", "good-2"):
        job_result = results_of(run, member)[-1]
        assert job_result["error_type"] == "Job"
        assert "lava-sync 'meet': timeout after" in job_result["error_msg"]
        assert "broken-1 (role broken)" in job_result["error_msg"]
    assert results_of(run, "broken-1")[-1]["error_type"] == "Test"


def test_protocol_block_on_a_named_action_substitutes_received_values(tmp_path):
    """The seed's form: a lava-wait at the start of one named action, `$KEY` replaced from the data received."""
    job = textwrap.dedent("""\
        job_name: protocol-block
        timeouts: {job: {minutes: 2}}
        protocols:
          lava-multinode:
            roles:
              host: {device_type: local-shell, count: 1}
              guest: {device_type: local-shell, count: 1}
            timeout: {seconds: 60}
        actions:
          - boot:
              role: host
              method: minimal
          - boot:
              role: guest
              method: minimal
              protocols:
                lava-multinode:
                  - action: connect-device
                    request: lava-sync
                    messageID: booting
                  - action: expect-shell-connection
                    request: lava-wait
                    messageID: hostready
                    message:
                      ipv4: $IPV4
          - test:
              role: host
              definitions:
                - from: inline
                  name: host
                  path: h.yaml
                  repository:
                    metadata: {name: host}
                    run:
                      steps:
                        - lava-sync booting
                        - lava-send hostready IPV4=192.168.0.3
          - test:
              role: guest
              definitions:
                - from: inline
                  name: guest
                  path: g.yaml
                  repository:
                    metadata: {name: guest}
                    run:
                      steps:
                        - lava-test-case got-ipv4 --shell test "$ipv4" = 192.168.0.3
        """)
    run = run_job(tmp_path, job, "local01")
    assert run.code == 0, run.stdout + run.stderr
    assert case(results_of(run, "guest-1"), "got-ipv4")["result"] == "pass"
    messages = log_of(run, "guest-1")
    wait_line = next(i for i, m in enumerate(messages) if "lava-wait 'hostready' received" in m)
    assert "'message': {'ipv4': '192.168.0.3'}, 'messageID': 'hostready'" in messages[wait_line]
    # the calls are made at the start of the named actions, before their own work
    assert messages[wait_line - 1].startswith("protocol lava-multinode: lava-wait 'hostready'")
    assert messages[wait_line - 2].startswith("start: ") and "expect-shell-connection" in messages[wait_line - 2]
    sync = next(i for i, m in enumerate(messages) if m.startswith("protocol lava-multinode: lava-sync 'booting'"))
    assert messages[sync - 1].startswith("start: ") and "connect-device" in messages[sync - 1]


def test_a_test_definition_can_send_lava_start_itself(tmp_path):
    job = textwrap.dedent("""\
        job_name: definition-lava-start
        timeouts: {job: {minutes: 2}}
        protocols:
          lava-multinode:
            roles:
              server: {device_type: local-shell, count: 1}
              client: {device_type: local-shell, count: 1}
            timeout: {seconds: 60}
        actions:
          - boot:
              role: server
              method: minimal
          - boot:
              role: client
              method: minimal
              protocols:
                lava-multinode:
                  request: lava-start
                  expect_role: server
          - test:
              role: server
              definitions:
                - from: inline
                  name: server
                  path: s.yaml
                  repository:
                    metadata: {name: server}
                    run:
                      steps:
                        - lava-send lava_start
                        - lava-wait client-up
                        - lava-test-case client-started --result pass
          - test:
              role: client
              definitions:
                - from: inline
                  name: client
                  path: c.yaml
                  repository:
                    metadata: {name: client}
                    run:
                      steps:
                        - lava-send client-up
        """)
    run = run_job(tmp_path, job, "local01")
    assert run.code == 0, run.stdout + run.stderr
    assert case(results_of(run, "server-1"), "client-started")["result"] == "pass"
    assert "lava-start: starting role(s) client" in log_of(run, "server-1")
