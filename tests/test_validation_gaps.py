"""Hostile job and device files: each gap once accepted (or crashed) is now a problem at validate time.

Several inputs per gap; the check is the one of test_validation.py: what
`lava-dispatch validate` prints (exit 1, the place of every problem, no
traceback), with and without the device.
"""

from __future__ import annotations

import textwrap

import pytest
from conftest import DEVICES, SAMPLES, device_path, run_cli
from test_validation import BOOT, DEPLOY, HEAD, MULTINODE_HEAD, job

INLINE = """
  - test:
      definitions:
        - from: inline
          name: smoke
          path: inline/smoke.yaml
          repository:
            metadata: {name: smoke}
            run: {steps: ['lava-test-case a --shell true']}
"""
LOCAL_HEAD = HEAD.replace("device_type: kvm", "device_type: local-shell")
MINIMAL = "  - boot:\n      method: minimal\n"


def inline(**changes: tuple[str, str]) -> str:
    """A local-shell job with one inline definition; each change is an (old, new) replacement in its text."""
    text = job(LOCAL_HEAD, MINIMAL, INLINE)
    for old, new in changes.values():
        assert old in text, old
        text = text.replace(old, new)
    return text


def deploy_with(keys: str) -> str:
    return DEPLOY.replace("os: debian", "os: debian\n      " + keys)


def boot_with(keys: str) -> str:
    return BOOT.replace("media: tmpfs", "media: tmpfs\n      " + keys)


RUN = "run: {steps: ['lava-test-case a --shell true']}"
PATH_LINE = "path: inline/smoke.yaml"
LAUGHS = "metadata:\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9))
GAPS = [
    # (gap, id, job text, device type, text that must appear in the error)
    ("duplicate-key", "top", HEAD + "job_name: again\n" + "actions:\n" + DEPLOY + BOOT, "kvm",
     "(job): duplicate key 'job_name' (line 6; first on line 2): LAVA would keep the last value; give the key once"),
    ("duplicate-key", "deploy", job(HEAD, deploy_with("to: tftp"), BOOT), "kvm",
     "actions[0].deploy: duplicate key 'to' (line 13; first on line 9): LAVA would keep the last value; give the key once"),
    ("duplicate-key", "flow", job(HEAD, "  - boot: {method: qemu, method: minimal}\n"), "kvm",
     "actions[0].boot: duplicate key 'method'"),
    ("duplicate-key", "inline-run", inline(a=(RUN, RUN + "\n            " + RUN)), "local-shell",
     "actions[1].test.definitions[0].repository: duplicate key 'run'"),
    ("billion-laughs", "definition-parameters",
     inline(a=("name: smoke\n", "name: smoke\n          parameters: {X: *l8}\n"),
            b=("actions:\n", LAUGHS + "actions:\n")),
     "local-shell", "aliases expand to more than 10000 nodes"),
    ("billion-laughs", "long-string", HEAD + "metadata:\n  s: &s '" + "x" * 600_000 + "'\n  t: [*s, *s]\n"
     + "actions:\n" + DEPLOY, "kvm", "metadata.t[1]: aliases expand to more than"),
    ("billion-laughs", "merge-keys", HEAD + "metadata:\n  a: &a {" + ", ".join(f"k{i}: {i}" for i in range(6000))
     + "}\n  b: {<<: *a}\n  c: {<<: *a}\n" + "actions:\n" + DEPLOY, "kvm", "aliases expand to more than"),
    ("recursive-alias", "list", HEAD + "metadata: &m {self: [*m]}\nactions:\n" + DEPLOY, "kvm",
     "metadata.self[0]: alias *m is inside the collection it names"),
    ("recursive-alias", "actions", job(HEAD, "  - &a {boot: {method: qemu, x: *a}}\n"), "kvm",
     "actions[0].boot.x: alias *a is inside the collection it names"),
    ("nesting-depth", "flow", HEAD + "metadata: " + "[" * 150 + "]" * 150 + "\nactions:\n" + DEPLOY, "kvm",
     "nested deeper than 100 levels"),
    ("nesting-depth", "crashing-depth", HEAD + "metadata: " + "[" * 200_000 + "\n", "kvm",
     "nested deeper than 100 levels"),
    ("nesting-depth", "block", HEAD + "metadata:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 120))
     + "  " * 120 + "v: 1\nactions:\n" + DEPLOY, "kvm", "nested deeper than 100 levels"),
    ("unreadable-scalar", "timestamp", HEAD.replace("job: {minutes: 10}", "job: {minutes: 10}\n  test: 2020-13-45")
     + "actions:\n" + DEPLOY, "kvm", "timeouts.test: cannot read '2020-13-45' as timestamp"),
    ("unreadable-scalar", "int-tag", job(HEAD, deploy_with("failure_retry: !!int x")),
     "kvm", "actions[0].deploy.failure_retry: cannot read 'x' as int"),
    ("unreadable-scalar", "hex-digits", job(HEAD, deploy_with("repeat: 0x"
                                                                 + "f" * 5000)), "kvm",
     "actions[0].deploy.repeat: cannot read '0xfff"),
    ("huge-duration", "minutes", HEAD.replace("{minutes: 10}", "{minutes: " + "9" * 400 + "}") + "actions:\n" + DEPLOY,
     "kvm", "timeouts.job: minutes: a very large number is more than 365 days"),
    ("huge-duration", "short-form", job(HEAD, deploy_with("timeout: 99999999999999999999s")),
     "kvm", "actions[0].deploy.timeout: 1e+20 s is more than 365 days"),
    ("huge-duration", "float", job(HEAD.replace("{minutes: 10}", "{seconds: 1.0e+308}"), DEPLOY), "kvm",
     "timeouts.job: seconds: 1e+308 is more than 365 days"),
    ("huge-duration", "sum", job(HEAD.replace("{minutes: 10}", "{days: 300, hours: 2000}"), DEPLOY), "kvm",
     "timeouts.job: 3.312e+07 s is more than 365 days"),
    ("non-finite-duration", "nan",
     job(HEAD.replace("{minutes: 10}", "{minutes: 10}\n  action: {seconds: .nan}"), DEPLOY), "kvm",
     "timeouts.action: seconds: nan is not a non-negative number"),
    ("non-finite-duration", "inf", job(HEAD.replace("{minutes: 10}", "{minutes: .inf}"), DEPLOY), "kvm",
     "timeouts.job: minutes: inf is more than 365 days"),
    ("non-finite-duration", "minus-inf", job(HEAD, deploy_with("timeout: {seconds: -.inf}")),
     "kvm", "actions[0].deploy.timeout: seconds: -inf is not a non-negative number"),
    ("shell-name-parameter", "job-parameters",
     inline(a=("name: smoke\n", "name: smoke\n          parameters: {MY-VAR: 1}\n")), "local-shell",
     "actions[1].test.definitions[0].parameters.MY-VAR: invalid key: 'MY-VAR' is not a shell variable name"),
    ("shell-name-parameter", "job-params", inline(a=("name: smoke\n", "name: smoke\n          params: {1ABC: x}\n")),
     "local-shell", "actions[1].test.definitions[0].params.1ABC: invalid key: '1ABC' is not a shell variable name"),
    ("shell-name-parameter", "definition-params", inline(a=(RUN, RUN + "\n            params: {'A B': x}")),
     "local-shell", "actions[1].test.definitions[0].repository.params.'A B': 'A B' is not a shell variable name"),
    ("shell-name-parameter", "definition-parameters", inline(a=(RUN, RUN + "\n            parameters: {a.b: x}")),
     "local-shell", "actions[1].test.definitions[0].repository.parameters.a.b: 'a.b' is not a shell variable name"),
    ("testdef-shape", "run-steps-mapping", inline(a=(RUN, "run: {steps: {a: ls}}")), "local-shell",
     "actions[1].test.definitions[0].repository.run.steps: a list of shell commands is required, got a mapping"),
    ("testdef-shape", "run-step-list", inline(a=(RUN, "run: {steps: [[ls]]}")), "local-shell",
     "actions[1].test.definitions[0].repository.run.steps[0]: expected a shell command (a string), got a list"),
    ("testdef-shape", "no-run", inline(a=(RUN, "install: {steps: [ls]}")), "local-shell",
     "actions[1].test.definitions[0].repository.run.steps: a list of shell commands is required"),
    ("testdef-shape", "install-list", inline(a=(RUN, RUN + "\n            install: [ls]")), "local-shell",
     "actions[1].test.definitions[0].repository.install: expected a mapping with steps and/or deps, got a list"),
    ("testdef-shape", "install-steps-string", inline(a=(RUN, RUN + "\n            install: {steps: ls}")),
     "local-shell", "actions[1].test.definitions[0].repository.install.steps: a list of shell commands is required"),
    ("testdef-shape", "parse-string", inline(a=(RUN, RUN + "\n            parse: '(?P<result>.*)'")), "local-shell",
     "actions[1].test.definitions[0].repository.parse: expected a mapping with pattern and fixupdict"),
    ("testdef-shape", "parse-bad-regex", inline(a=(RUN, RUN + "\n            parse: {pattern: '(?P<result>'}")),
     "local-shell", "actions[1].test.definitions[0].repository.parse.pattern: '(?P<result>' is not a valid regular"),
    ("testdef-shape", "parse-missing-groups", inline(a=(RUN, RUN + "\n            parse: {pattern: '(?P<result>x)'}")),
     "local-shell", "actions[1].test.definitions[0].repository.parse.pattern: needs the named groups test_case_id"),
    ("testdef-shape", "fixupdict-list", inline(a=(RUN, RUN + "\n            parse: {fixupdict: [PASS]}")),
     "local-shell", "actions[1].test.definitions[0].repository.parse.fixupdict: expected a mapping"),
    ("testdef-shape", "fixupdict-value", inline(a=(RUN, RUN + "\n            parse: {fixupdict: {PASS: [pass]}}")),
     "local-shell", "actions[1].test.definitions[0].repository.parse.fixupdict.PASS: expected a result"),
    ("testdef-shape", "metadata-name-list", inline(a=("metadata: {name: smoke}", "metadata: {name: [a]}")),
     "local-shell", "actions[1].test.definitions[0].repository.metadata.name: expected a name"),
    ("install-deps-type", "number", inline(a=(RUN, RUN + "\n            install: {deps: [curl, 7]}")), "local-shell",
     "actions[1].test.definitions[0].repository.install.deps[1]: expected a package name (a string), got 7"),
    ("install-deps-type", "mapping", inline(a=(RUN, RUN + "\n            install: {deps: [{a: b}]}")), "local-shell",
     "actions[1].test.definitions[0].repository.install.deps[0]: expected a package name (a string), got a mapping"),
    ("install-deps-type", "string", inline(a=(RUN, RUN + "\n            install: {deps: curl}")), "local-shell",
     "actions[1].test.definitions[0].repository.install.deps: expected a list of package names"),
    ("install-deps-type", "null-entry", inline(a=(RUN, RUN + "\n            install: {deps: [curl, ~]}")),
     "local-shell",
     "actions[1].test.definitions[0].repository.install.deps[1]: expected a package name (a string), got None"),
    ("definition-path", "empty", inline(a=(PATH_LINE, "path: ''")), "local-shell",
     "actions[1].test.definitions[0].path: '' does not name a file"),
    ("definition-path", "dot", inline(a=(PATH_LINE, "path: ./")), "local-shell",
     "actions[1].test.definitions[0].path: './' does not name a file"),
    ("definition-path", "nul", inline(a=(PATH_LINE, 'path: "a\\0b.yaml"')), "local-shell",
     "actions[1].test.definitions[0].path: 'a\\x00b.yaml': a path cannot hold a NUL character"),
    ("definition-path", "absolute", inline(a=(PATH_LINE, "path: /etc/passwd")), "local-shell",
     "actions[1].test.definitions[0].path: '/etc/passwd' must be a relative path"),
    ("definition-path", "dotdot-inside", inline(a=(PATH_LINE, "path: a/../../b.yaml")), "local-shell",
     "actions[1].test.definitions[0].path: 'a/../../b.yaml' must be a relative path"),
    ("definition-path", "too-long", inline(a=(PATH_LINE, "path: " + "a/" * 2100 + "x.yaml")), "local-shell",
     "actions[1].test.definitions[0].path: the path is 4206 bytes long, more than 4096"),
    ("definition-path", "long-component", inline(a=(PATH_LINE, "path: d/" + "x" * 256)), "local-shell",
     "actions[1].test.definitions[0].path: a component of the path is longer than 255 bytes"),
    ("prompt-regex", "job-prompt", job(HEAD, DEPLOY, boot_with("prompts: ['ok', '(']")),
     "kvm", "actions[1].boot.prompts[1]: '(' is not a valid regular expression: missing )"),
    ("prompt-regex", "job-prompt-string", job(HEAD, DEPLOY, boot_with("prompts: '[a-'")),
     "kvm", "actions[1].boot.prompts[0]: '[a-' is not a valid regular expression"),
    ("prompt-regex", "login-prompt", job(HEAD, DEPLOY, boot_with(
        "auto_login: {login_prompt: '*login:', username: root}")), "kvm",
     "actions[1].boot.auto_login.login_prompt: '*login:' is not a valid regular expression: nothing to repeat"),
    ("prompt-regex", "password-prompt-nesting", job(HEAD, DEPLOY, boot_with(
        "auto_login: {login_prompt: 'login:', username: root, password_prompt: '"
        + "(" * 1200 + ")" * 1200 + "'}")), "kvm",
     "actions[1].boot.auto_login.password_prompt: '((((("),
    ("prompt-regex", "repeat-too-large", job(HEAD, DEPLOY, boot_with("prompts: 'a{99999999999}'")),
     "kvm", "actions[1].boot.prompts[0]: 'a{99999999999}' is not a usable regular expression"),
    ("whole-number", "bool", job(HEAD, DEPLOY, boot_with("failure_retry: true")),
     "kvm", "actions[1].boot.failure_retry: expected a whole number, got true"),
    ("whole-number", "float", job(HEAD, DEPLOY, boot_with("failure_retry: 2.0")),
     "kvm", "actions[1].boot.failure_retry: expected a whole number, got float 2.0"),
    ("whole-number", "nan", job(HEAD + "priority: .nan\n", DEPLOY), "kvm",
     "priority: expected a whole number, got float nan"),
    ("whole-number", "root-partition", job(HEAD, deploy_with("root_partition: 99999")),
     "kvm", "actions[0].deploy.root_partition: must be <= 128, got 99999"),
    ("whole-number", "repeat-count-bool", job(HEAD, DEPLOY, "  - repeat:\n      count: true\n      actions:\n"
                                              + textwrap.indent(BOOT, "    ")), "kvm",
     "actions[1].repeat.count: a whole number from 1 to 1000 is required"),
    ("whole-number", "role-count", job(MULTINODE_HEAD.replace("count: 1}", "count: 1e3}", 1),
                                       DEPLOY.replace("to: tmpfs", "to: tmpfs\n      role: [server, client]")), "kvm",
     "protocols.lava-multinode.roles.server.count: expected a whole number, got str '1e3'"),
    ("odd-values", "deploy-to-list", job(HEAD, "  - deploy: {to: [tmpfs], os: debian}\n"), "kvm",
     "actions[0].deploy.to: a list is not one of tmpfs, tftp, usb, sata, nfs"),
    ("odd-values", "boot-method-mapping", job(HEAD, DEPLOY, "  - boot: {method: {qemu: 1}}\n"), "kvm",
     "actions[1].boot.method: a mapping is not one of qemu, qemu-nfs, u-boot, minimal"),
    ("odd-values", "repeat-mixed-keys", job(HEAD, DEPLOY, "  - repeat: {count: 2, actions: [], 7: x, y: z}\n"), "kvm",
     "actions[1].repeat.7: unknown key"),
    ("odd-values", "key-with-newline", HEAD + '"bad\\nkey": 1\nactions:\n' + DEPLOY, "kvm", "'bad\\nkey': unknown key"),
]


@pytest.mark.parametrize("gap,name,text,device_type,expected", GAPS, ids=[f"{g[0]}:{g[1]}" for g in GAPS])
def test_hostile_job_is_rejected_at_validate_time(tmp_path, gap, name, text, device_type, expected):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    for argv in (["validate", str(path)], ["validate", str(path), "--device", str(device_path(device_type))]):
        result = run_cli(*argv)
        assert result.code == 1, result.err
        assert expected in result.err, result.err
        assert "Traceback" not in result.err and result.out == ""
        assert all("\n" not in line and ": " in line for line in result.err.splitlines()[1:])


def test_every_gap_has_several_inputs():
    gaps = [case[0] for case in GAPS]
    assert all(gaps.count(gap) >= 2 for gap in gaps), {gap: gaps.count(gap) for gap in gaps}
    assert len({case[2] for case in GAPS}) == len(GAPS)


KVM_DEVICE = (DEVICES / "kvm01.yaml").read_text()
BBB_DEVICE = (DEVICES / "bbb01.yaml").read_text()
QEMU_PARAMETERS = "        parameters:\n          command: qemu-system-x86_64\n"
DEVICE_GAPS = [
    # (gap, id, device text, text that must appear in the error); the job is the sample kvm.yaml or uboot-nfs.yaml
    ("method-shape", "parameters-string", KVM_DEVICE.replace(QEMU_PARAMETERS, "        parameters: qemu-system-x86_64\n"
                                                             "        unused:\n          command: x\n"),
     "kvm01.yaml: actions.boot.methods.qemu.parameters: expected a mapping, got 'qemu-system-x86_64'"),
    ("method-shape", "method-string", KVM_DEVICE.replace("      tmpfs: {}", "      tmpfs: yes-please"),
     "kvm01.yaml: actions.deploy.methods.tmpfs: expected a mapping (parameters, command sets), got 'yes-please'"),
    ("method-shape", "parameters-list", KVM_DEVICE.replace("      tmpfs: {}", "      tmpfs: {parameters: [a]}"),
     "kvm01.yaml: actions.deploy.methods.tmpfs.parameters: expected a mapping, got a list"),
    ("uboot-commands", "string", BBB_DEVICE.replace("        usb:\n          commands:\n            - usb start\n",
                                                    "        usb:\n          commands: usb start\n          x:\n"
                                                    "            - usb start\n"),
     "bbb01.yaml: actions.boot.methods.u-boot.usb.commands: expected a list of commands (strings)"),
    ("uboot-commands", "mapping-entry", BBB_DEVICE.replace("            - usb start\n", "            - {usb: start}\n"),
     "bbb01.yaml: actions.boot.methods.u-boot.usb.commands: expected a list of commands (strings)"),
    ("load-addresses", "string",
     BBB_DEVICE.replace("  bootm:\n    kernel: '0x80200000'\n",
                        "  bootm: '0x80200000'\n  x:\n    kernel: '0x80200000'\n"),
     "bbb01.yaml: parameters.bootm: expected a mapping of load addresses"),
    ("load-addresses", "list", BBB_DEVICE.replace("  bootz:\n", "  bootz: [1]\n  x:\n"),
     "bbb01.yaml: parameters.bootz: expected a mapping of load addresses"),
    ("device-prompts", "bad-regex", KVM_DEVICE.replace("    - 'root@lava-board:~# '", "    - 'root@(lava-board:~# '"),
     "kvm01.yaml: constants.shell-prompts[0]: 'root@(lava-board:~# ' is not a valid regular expression"),
    ("device-prompts", "string", KVM_DEVICE.replace("  shell-prompts:\n    - 'root@lava-board:~# '",
                                                    "  shell-prompts: 'root@lava-board:~# '"),
     "kvm01.yaml: constants.shell-prompts: expected a list of strings, got 'root@lava-board:~# '"),
    ("device-prompts", "boolean", KVM_DEVICE.replace("  shell-prompts:\n    - 'root@lava-board:~# '", "  shell-prompts: true"),
     "kvm01.yaml: constants.shell-prompts: expected a list of strings, got True"),
    ("device-prompts", "failure-messages", KVM_DEVICE.replace("constants:\n", "constants:\n  failure-messages: 5\n"),
     "kvm01.yaml: constants.failure-messages: expected a list of strings, got 5"),
    ("device-yaml", "duplicate-key", KVM_DEVICE.replace("hostname: kvm01\n", "hostname: kvm01\nhostname: kvm02\n"),
     "kvm01.yaml: (device): duplicate key 'hostname' (line 6; first on line 5): LAVA would keep the last value; give the key once"),
    ("device-yaml", "nan-timeout", KVM_DEVICE.replace("seconds: 30", "seconds: .nan"),
     "kvm01.yaml: timeouts.actions.execute-qemu: seconds: nan is not a non-negative number"),
    ("device-yaml", "environment-name", KVM_DEVICE + "environment: {MY-VAR: x}\n",
     "kvm01.yaml: environment.MY-VAR: 'MY-VAR' is not a shell variable name"),
]


@pytest.mark.parametrize("gap,name,text,expected", DEVICE_GAPS, ids=[f"{g[0]}:{g[1]}" for g in DEVICE_GAPS])
def test_malformed_device_is_rejected_with_its_place(tmp_path, gap, name, text, expected):
    """The device file is the lab's (trusted), but a mistake in it is a problem, not a traceback later."""
    sample = "kvm.yaml" if "kvm01" in expected else "uboot-nfs.yaml"
    device = tmp_path / expected.split(":")[0]
    device.write_text(text)
    result = run_cli("validate", str(SAMPLES / sample), "--device", str(device))
    assert result.code == 1, result.err
    assert expected in result.err, result.err
    assert "Traceback" not in result.err and result.out == ""
