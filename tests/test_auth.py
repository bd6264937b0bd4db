"""chatkit.auth: tokens, the secret file, join codes, user-name rules, `chatkit token`,
and the refusal to serve a network without sign-in."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from chatkit import auth
from chatkit.auth import Authenticator, AuthError, TokenSigner, validate_name
from chatkit.errors import ProtocolError


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_token_round_trip_carries_name_role_and_expiry():
    clock = Clock()
    signer = TokenSigner("s3cret", clock=clock)
    token = signer.issue("ann", "teacher", "2h")
    who = signer.verify(token)
    assert (who.name, who.role, who.expires) == ("ann", "teacher", clock.now + 7200)
    assert who.is_teacher


def test_expired_token_is_refused_with_its_own_code():
    clock = Clock()
    signer = TokenSigner("s3cret", clock=clock)
    token = signer.issue("ann", ttl="30m")
    clock.now += 1799
    assert signer.verify(token).name == "ann"
    clock.now += 1
    with pytest.raises(AuthError) as info:
        signer.verify(token)
    assert info.value.code == "expired_token"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature changed
        lambda t: "x" + t,  # payload changed
        lambda t: "not-a-token",
        lambda t: "",
    ],
)
def test_tampered_or_garbage_tokens_are_bad_tokens(mangle):
    signer = TokenSigner("s3cret")
    with pytest.raises(AuthError) as info:
        signer.verify(mangle(signer.issue("ann")))
    assert info.value.code == "bad_token"


def test_a_token_signed_with_another_secret_is_a_bad_token():
    token = TokenSigner("one").issue("ann", "teacher")
    with pytest.raises(AuthError) as info:
        TokenSigner("two").verify(token)
    assert info.value.code == "bad_token"


@pytest.mark.parametrize("name", ["AI", "ai", "Ａｉ", "System", "chatkit"])
def test_reserved_names_are_refused_in_any_case_or_width(name):
    with pytest.raises(ProtocolError) as info:
        validate_name(name)
    assert info.value.code == "reserved_name"
    with pytest.raises(ProtocolError):
        TokenSigner("s").issue(name)


@pytest.mark.parametrize(
    "name",
    [
        "ann\u202egnp.exe",  # RIGHT-TO-LEFT OVERRIDE
        "te\u200bacher",  # ZERO WIDTH SPACE
        "bob\u2066x",  # LEFT-TO-RIGHT ISOLATE
        "a\u200db",  # ZERO WIDTH JOINER
        "eve\x07",  # control
        "x\u2028y",  # LINE SEPARATOR
        "",
        "   ",
        " ann",
        "a" * 33,
        42,
    ],
)
def test_invisible_control_blank_long_or_non_string_names_are_refused(name):
    with pytest.raises(ProtocolError) as info:
        validate_name(name)
    assert info.value.code == "bad_user"


def test_names_are_nfc_normalized_and_unicode_letters_welcome():
    decomposed = "Jose\u0301"  # e + combining acute
    assert validate_name(decomposed) == "Jos\u00e9"
    assert validate_name("김민준") == "김민준"
    assert validate_name("a" * 32) == "a" * 32


def test_secret_file_is_created_owner_only_and_reused(tmp_path):
    path = tmp_path / "secret"
    first = auth.load_secret(path, env={})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(first) >= 32
    assert auth.load_secret(path, env={}) == first
    assert auth.load_secret(path, env={auth.SECRET_ENV: "from-env"}) == "from-env"
    assert auth.load_secret(None, env={}) is None


def test_join_code_from_option_env_or_file(tmp_path):
    code_file = tmp_path / "code"
    code_file.write_text("from-file\n")
    assert auth.load_join_code("opt", code_file, env={auth.JOIN_CODE_ENV: "env"}) == "opt"
    assert auth.load_join_code(None, code_file, env={auth.JOIN_CODE_ENV: "env"}) == "env"
    assert auth.load_join_code(None, code_file, env={}) == "from-file"
    assert auth.load_join_code(None, None, env={}) is None


def test_login_with_the_join_code_binds_the_name_and_role():
    a = Authenticator.from_options(join_code="blue-42", teacher_code="staff-7")
    token, who = a.login("ann", "blue-42")
    assert (who.name, who.role) == ("ann", "student")
    assert a.authenticate({"authorization": f"Bearer {token}"}).name == "ann"
    _, teacher = a.login("Ms Kim", "staff-7")
    assert teacher.role == "teacher"
    with pytest.raises(AuthError) as info:
        a.login("ann", "blue-43")
    assert info.value.code == "bad_join_code"
    with pytest.raises(ProtocolError) as refused:
        a.login("AI", "blue-42")
    assert refused.value.code == "reserved_name"


def test_authenticate_reads_bearer_then_cookie_then_query():
    a = Authenticator(TokenSigner("s"))
    t_header, t_cookie, t_query = (a.signer.issue(n) for n in ("h", "c", "q"))
    assert (
        a.authenticate(
            {"authorization": f"Bearer {t_header}", "cookie": f"{auth.COOKIE_NAME}={t_cookie}"},
            {"token": [t_query]},
        ).name
        == "h"
    )
    assert (
        a.authenticate({"cookie": f"other=1; {auth.COOKIE_NAME}={t_cookie}"}, {"token": [t_query]}).name
        == "c"
    )
    assert a.authenticate({}, {"token": [t_query]}).name == "q"
    with pytest.raises(AuthError) as info:
        a.authenticate({"authorization": "Basic abc"})
    assert info.value.code == "auth_required"


def test_sign_in_off_authenticates_nobody_and_refuses_login():
    a = Authenticator()
    assert not a.enabled and a.authenticate({}) is None
    with pytest.raises(AuthError) as info:
        a.login("ann", "x")
    assert info.value.code == "login_disabled"


@pytest.mark.parametrize(
    "text,seconds", [("45s", 45), ("30m", 1800), ("8h", 28800), ("2d", 172800), ("90", 90)]
)
def test_parse_ttl(text, seconds):
    assert auth.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "8x", "-1h", "0"])
def test_parse_ttl_refuses_nonsense(text):
    with pytest.raises(ValueError):
        auth.parse_ttl(text)


@pytest.mark.parametrize(
    "host,sign_in,mode,refused",
    [
        ("127.0.0.1", False, "auto", False),
        ("localhost", False, "auto", False),
        ("0.0.0.0", False, "auto", True),
        ("192.168.1.20", False, "auto", True),
        ("0.0.0.0", True, "auto", False),
        ("0.0.0.0", False, "none", False),
    ],
)
def test_exposure_rule(host, sign_in, mode, refused):
    assert (auth.exposure_problem(host, sign_in=sign_in, auth=mode) is not None) == refused


# -- the command line -------------------------------------------------------------


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chatkit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_chatkit_token_prints_a_token_the_secret_verifies(tmp_path):
    secret_file = tmp_path / "secret"
    out = run_cli("token", "ann", "--role", "teacher", "--ttl", "1h", "--secret-file", str(secret_file))
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    who = TokenSigner(secret_file.read_text().strip()).verify(token)
    assert (who.name, who.role) == ("ann", "teacher")
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    env_out = run_cli("token", "bob", env={auth.SECRET_ENV: "shared"})
    assert TokenSigner("shared").verify(env_out.stdout.strip()).name == "bob"


def test_chatkit_token_refuses_reserved_names_and_a_missing_secret():
    out = run_cli("token", "AI", env={auth.SECRET_ENV: "shared"})
    assert out.returncode == 2 and "reserved" in out.stderr and not out.stdout
    out = run_cli("token", "ann", env={auth.SECRET_ENV: ""})
    assert out.returncode == 2 and "--secret-file" in out.stderr


def test_serve_on_the_network_without_sign_in_refuses_with_one_line():
    out = run_cli(
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--db",
        ":memory:",
        env={auth.SECRET_ENV: "", auth.JOIN_CODE_ENV: ""},
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--join-code" in lines[0] and "--auth none" in lines[0]
