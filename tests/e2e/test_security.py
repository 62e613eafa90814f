"""CHAP and initiator ACLs on a live target, with libiscsi's tools and the Python initiator.

libiscsi (1.19) speaks CHAP_A=5 (MD5) and mutual CHAP through the `target_user`/`target_password` URL
arguments; the other algorithms are exercised with tests/initiator.py.
"""
import pytest
from harness import HOST, IQN, run, tool

import initiator as I

ALLOWED = "iqn.2026-11.org.example:host1"
OTHER = "iqn.2026-11.org.example:intruder"
USER, SECRET = "alice", "alice-secret-123"
TARGET_USER, TARGET_SECRET = "tgt", "target-secret-456"
DISCOVERY_USER, DISCOVERY_SECRET = "finder", "discovery-secret-789"

CHAP_TARGET = f"""
[target.chap]
username = "{USER}"
secret = "{SECRET}"
[target.mutual_chap]
username = "{TARGET_USER}"
secret = "{TARGET_SECRET}"
"""
DISCOVERY = f"""
[discovery.chap]
username = "{DISCOVERY_USER}"
secret = "{DISCOVERY_SECRET}"
"""


@pytest.fixture(scope="module")
def chap_target(tmp_path_factory):
    from conftest import _Launcher
    launcher = _Launcher(tmp_path_factory.mktemp("chap"))
    yield launcher(target_extra=CHAP_TARGET, extra=DISCOVERY)
    launcher.stop_all()


@pytest.fixture(scope="module")
def acl_target(tmp_path_factory):
    from conftest import _Launcher
    launcher = _Launcher(tmp_path_factory.mktemp("acl"))
    yield launcher(target_extra=f'allowed_initiators = ["{ALLOWED}"]')
    launcher.stop_all()


def url(tgt, credentials="", args=""):
    return f"iscsi://{credentials}{tgt.portal}/{tgt.iqn}/0{args}"


MUTUAL = f"?target_user={TARGET_USER}&target_password={TARGET_SECRET}"


def test_libiscsi_logs_in_with_chap_and_mutual_chap(chap_target):
    out = run([tool("iscsi-inq"), url(chap_target, f"{USER}%{SECRET}@", MUTUAL)]).stdout
    print(out)
    assert "ringtgt" in out.lower() or "Peripheral" in out or "Vendor" in out


@pytest.mark.parametrize("credentials,args", [
    ("", ""),                                        # no CHAP at all
    (f"{USER}%wrong-secret-000@", MUTUAL),           # wrong secret
    (f"bob%{SECRET}@", MUTUAL),                      # wrong name
    (f"{USER}%{SECRET}@", ""),                       # the target requires mutual CHAP: not asked for
    (f"{USER}%{SECRET}@", f"?target_user={TARGET_USER}&target_password=not-the-target-secret"),  # target fails
], ids=["none", "wrong-secret", "wrong-name", "no-mutual", "target-proof-wrong"])
def test_libiscsi_refused(chap_target, credentials, args):
    proc = run([tool("iscsi-inq"), url(chap_target, credentials, args)], check=False)
    print(proc.stdout)
    assert proc.returncode != 0, proc.stdout


def test_failures_logged_without_secret(chap_target):
    run([tool("iscsi-inq"), url(chap_target, f"{USER}%wrong-secret-000@", MUTUAL)], check=False)
    log = chap_target.stderr()
    assert "login failed (0x0201)" in log
    for secret in (SECRET, TARGET_SECRET, "wrong-secret-000", DISCOVERY_SECRET):
        assert secret not in log


@pytest.mark.parametrize("algorithms", ["5", "6", "7", "8"])
def test_python_initiator_every_algorithm_mutual(chap_target, algorithms):
    with I.Initiator.connect(HOST, chap_target.port) as ini:
        ini.login(IQN, chap=(USER, SECRET), mutual_chap=(TARGET_USER, TARGET_SECRET), chap_algorithms=algorithms)
        ini.clear_unit_attentions()
        assert ini.read(0, 1, block_size=512).status == I.GOOD
        ini.logout()


def test_python_initiator_wrong_secret_gets_authentication_failure(chap_target):
    with I.Initiator.connect(HOST, chap_target.port) as ini:
        with pytest.raises(I.LoginFailed) as failed:
            ini.login(IQN, chap=(USER, "not-the-secret-1"), mutual_chap=(TARGET_USER, TARGET_SECRET))
        assert (failed.value.status_class, failed.value.status_detail) == (2, 1)


def test_discovery_chap(chap_target):
    ls = tool("iscsi-ls")
    out = run([ls, f"iscsi://{DISCOVERY_USER}%{DISCOVERY_SECRET}@{chap_target.portal}"]).stdout
    assert IQN in out
    proc = run([ls, f"iscsi://{chap_target.portal}"], check=False)
    assert proc.returncode != 0 or IQN not in proc.stdout, proc.stdout
    proc = run([ls, f"iscsi://{USER}%{SECRET}@{chap_target.portal}"], check=False)   # the target's, not discovery's
    assert proc.returncode != 0 or IQN not in proc.stdout, proc.stdout


def test_acl_refuses_other_initiator(acl_target):
    inq = tool("iscsi-inq")
    run([inq, "-i", ALLOWED, url(acl_target)])
    proc = run([inq, "-i", OTHER, url(acl_target)], check=False)
    print(proc.stdout)
    assert proc.returncode != 0
    with I.Initiator.connect(HOST, acl_target.port) as ini:
        with pytest.raises(I.LoginFailed) as failed:
            ini.login(IQN, initiator_name=OTHER)
        assert (failed.value.status_class, failed.value.status_detail) == (2, 2)    # authorization failure


def test_send_targets_lists_only_permitted_targets(acl_target):
    ls = tool("iscsi-ls")
    assert IQN in run([ls, "-i", ALLOWED, f"iscsi://{acl_target.portal}"]).stdout
    proc = run([ls, "-i", OTHER, f"iscsi://{acl_target.portal}"], check=False)
    print(proc.stdout)
    assert IQN not in proc.stdout
