"""Security as a user meets it: tokens, ACLs, direct-message permissions, limits, TLS and mTLS.

Each refusal is checked for its error class and reason, and each runs while an authorised
agent keeps working on the same hub. The shared transports run each test (mqtt:// skips: the
broker, not the hub, authenticates there).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import latentwire
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from latentwire._grpc_stream import METHOD
from latentwire._proto import bus_pb2 as pb
from latentwire._topics import topic_matches
from latentwire._wire import FrameDecoder, encode_batch
from latentwire.hub import Hub
from latentwire.hub.auth import AuthFile, Policy, filter_within, reload_policy
from latentwire.hub.server import serve
from latentwire.hub.tokens import hash_token, verify_token
from latentwire.hub.tokens import main as hash_token_main

from .conftest import HubEnv

pytestmark = pytest.mark.timeout(60)

TOKENS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
# Cheap scrypt parameters keep the tests fast; the format and the check are the same.
HASHES = {agent: hash_token(token, n=1024) for agent, token in TOKENS.items()}


def auth_config() -> dict:
    return {
        "defaults": {"limits": {"max_subscriptions": 8}},
        "agents": {
            "alice": {"token_hash": HASHES["alice"], "publish": ["sensors/#"],
                      "subscribe": ["sensors/#", "control/+"], "send": ["bob", "worker-*"]},
            "bob": {"token_hash": HASHES["bob"], "publish": ["control/bob"],
                    "subscribe": ["sensors/+/temp"], "send": [],
                    "limits": {"max_subscriptions": 2}},
            "carol": {"token_hash": HASHES["carol"], "publish": ["#"], "subscribe": ["#"], "send": ["*"],
                      "limits": {"publish_rate": 0.001, "publish_burst": 2, "max_message_bytes": 2048}},
        },
    }


@pytest.fixture
async def secure(make_env) -> HubEnv:
    """A hub with the auth file above on each transport."""
    env = await make_env()
    if env.broker:
        pytest.skip(f"{env.kind}:// is authenticated by the broker, not by the hub")
    env.hub.policy = Policy(AuthFile.model_validate(auth_config()))
    return env


def grpc_channel(env: HubEnv) -> grpc.aio.Channel:
    """A plain gRPC channel to the env's hub (trusting its test certificate on grpcs://)."""
    target = env.url.split("://", 1)[1]
    if "tls_ca" not in env.options:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(env.options["tls_ca"].read_bytes()))


def agent(env: HubEnv, name: str, token: str | None = None, **options) -> latentwire.Bus:
    return env.connect(name, token=TOKENS.get(name) if token is None else token or None, **options)


async def works(env: HubEnv, alice: latentwire.Bus, sub: latentwire.Subscription, tag: str) -> None:
    """The authorised agent still publishes and receives."""
    await alice.publish("sensors/ok", tag)
    assert (await sub.receive(timeout=5)).text == tag


# -- authentication ----------------------------------------------------------------------


@pytest.mark.parametrize("name, token", [("alice", ""), ("alice", "wrong"), ("mallory", "alice-secret")])
async def test_bad_credentials_are_unauthenticated(secure: HubEnv, name: str, token: str) -> None:
    async with agent(secure, "alice") as alice, alice.subscribe("sensors/#") as sub:
        with pytest.raises(latentwire.Unauthenticated) as info:
            async with agent(secure, name, token=token or ""):
                pass
        reason = str(info.value)
        assert ("gave no token" in reason) if not token else (f"invalid token for agent {name!r}" in reason)
        await works(secure, alice, sub, "still here")


async def test_refused_hello_ends_the_grpc_call_with_unauthenticated(secure: HubEnv) -> None:
    if secure.server is None:
        pytest.skip("gRPC status codes need a gRPC hub")
    async with grpc_channel(secure) as ch:
        call = ch.stream_stream(METHOD)()
        hello = pb.Frame(hello=pb.Hello(agent="alice", token="nope", receive_window=4))
        await call.write(encode_batch([(hello, b"")], 1 << 20)[0])
        frame = FrameDecoder().feed(await asyncio.wait_for(call.read(), 5))[0][0]
        assert frame.error.code == pb.UNAUTHENTICATED and "invalid token" in frame.error.reason
        assert await asyncio.wait_for(call.code(), 5) == grpc.StatusCode.UNAUTHENTICATED
        assert "invalid token for agent 'alice'" in await call.details()


async def test_tokens_are_never_logged(secure: HubEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for token in ("alice-secret", "guess-1234"):
        try:
            async with agent(secure, "bob", token=token):
                pass
        except latentwire.Unauthenticated:
            pass
    async with agent(secure, "alice"):
        pass
    assert "refused agent 'bob'" in caplog.text  # refusals are logged ...
    for secret in ("alice-secret", "guess-1234", HASHES["alice"], HASHES["bob"]):
        assert secret not in caplog.text  # ... without the token or its hash


# -- ACLs ----------------------------------------------------------------------------------


async def test_publish_outside_the_acl_is_denied_and_the_session_goes_on(secure: HubEnv) -> None:
    async with agent(secure, "alice") as alice, alice.subscribe("sensors/#") as sub, \
            agent(secure, "bob") as bob:
        with pytest.raises(latentwire.PermissionDenied, match=re.escape(
                "agent 'alice' may not publish to 'control/x' (allowed: ['sensors/#'])")):
            await alice.publish("control/x", "nope")
        with pytest.raises(latentwire.PermissionDenied, match="may not publish to 'sensors/a'"):
            await bob.publish("sensors/a", "nope")
        await works(secure, alice, sub, "after the refusal")  # only that publish was refused
        assert secure.hub.stats.published == 1


async def test_subscription_outside_the_acl_is_denied(secure: HubEnv) -> None:
    async with agent(secure, "alice") as alice, alice.subscribe("sensors/#") as sub, \
            agent(secure, "bob") as bob:
        # bob may hold filters within sensors/+/temp: a wider one is refused, a narrower one is fine
        for wider in ("sensors/#", "sensors/+/+", "#"):
            with pytest.raises(latentwire.PermissionDenied,
                               match=re.escape(f"may not subscribe to '{wider}'")):
                await bob.subscribe(wider)
        temp = await bob.subscribe("sensors/kitchen/temp")
        await alice.publish("sensors/kitchen/temp", "21C")
        assert (await temp.receive(timeout=5)).text == "21C"
        assert (await sub.receive(timeout=5)).text == "21C"  # alice's own sensors/# too
        await works(secure, alice, sub, "ok")


async def test_direct_messages_follow_send_permissions_and_replies_are_allowed(secure: HubEnv) -> None:
    async with agent(secure, "alice") as alice, agent(secure, "bob") as bob:
        with pytest.raises(latentwire.PermissionDenied, match=r"may not send direct messages to 'alice'"):
            await bob.send("alice", "hi")
        await alice.send("bob", "hello bob")
        assert (await bob.inbox().receive(timeout=5)).text == "hello bob"

        async def answer() -> None:  # bob may answer a request even though he may not send to alice
            request = await bob.inbox().receive(timeout=5)
            await bob.reply(request, "pong")
            with pytest.raises(latentwire.PermissionDenied):  # one reply per request
                await bob.reply(request, "again")

        server = asyncio.create_task(answer())
        assert (await alice.request("bob", "ping", timeout=5)).text == "pong"
        await server


# -- limits --------------------------------------------------------------------------------


async def test_publish_rate_limit(secure: HubEnv) -> None:
    async with agent(secure, "carol") as carol, agent(secure, "alice") as alice, \
            alice.subscribe("sensors/#") as sub:
        await carol.publish("t", "1")
        await carol.publish("t", "2")  # the burst of 2; the rate (one per 1000 s) refills nothing
        with pytest.raises(latentwire.LimitExceeded, match=r"above its publish rate of 0.001/s \(burst 2\)"):
            await carol.publish("t", "3")
        await works(secure, alice, sub, "alice is not limited")


async def test_message_size_limit_per_agent(secure: HubEnv) -> None:
    async with agent(secure, "carol") as carol:
        with pytest.raises(latentwire.MessageTooLarge, match="exceeds agent 'carol'") as info:
            await carol.publish("t", latent=np.zeros(4096, np.uint8))
        assert info.value.limit == 2048
        await carol.publish("t", latent=np.zeros(1024, np.uint8))


async def test_subscription_limit(secure: HubEnv) -> None:
    async with agent(secure, "bob") as bob:
        await bob.subscribe("sensors/a/temp")
        await bob.subscribe("sensors/b/temp")
        with pytest.raises(latentwire.LimitExceeded, match="at most 2 subscriptions; this would make 3"):
            await bob.subscribe("sensors/c/temp")
        await bob.subscribe("sensors/a/temp")  # held already: no new filter, allowed


def test_rate_refills_and_a_refused_reply_keeps_its_permission() -> None:
    from latentwire.hub.auth import Guard, Limits

    now = [0.0]
    rule = AuthFile.model_validate(auth_config()).agents["bob"]
    guard = Guard("bob", rule, Limits(publish_rate=2.0, publish_burst=1), clock=lambda: now[0])
    reply = pb.Envelope(id="r", recipient="alice", correlation_id="c1")
    reply.text = ""
    guard.grant_reply("alice", "c1")
    guard.check_publish(pb.Envelope(id="x", topic="control/bob", text=""), 0)  # the one token
    with pytest.raises(latentwire.LimitExceeded, match="retry in 0.5 s"):
        guard.check_publish(reply, 0)
    now[0] = 0.5  # half a second at 2/s refills one token
    guard.check_publish(reply, 0)  # the reply permission survived the refusal ...
    now[0] = 10.0
    with pytest.raises(latentwire.PermissionDenied):  # ... and is used up now
        guard.check_publish(reply, 0)


async def test_limits_apply_without_an_auth_file(make_env) -> None:
    env = await make_env()
    if env.broker:
        pytest.skip("hub limits")
    from latentwire.hub.auth import Limits

    env.hub.policy = Policy(limits=Limits(max_subscriptions=1))
    async with env.connect("anyone") as bus:
        await bus.subscribe("a")
        with pytest.raises(latentwire.LimitExceeded, match="at most 1 subscriptions"):
            await bus.subscribe("b")
        await bus.publish("anything/goes", "x")  # no auth file: every topic is allowed


# -- TLS and mutual TLS ----------------------------------------------------------------------


def _write_pair(folder: Path, name: str, cert, key) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization

    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def _cert(subject: str, issuer_name: str | None = None, issuer_key=None, *, ca: bool = False,
          server: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]) if issuer_name else name
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a hub certificate and a client certificate it signed, and a stranger's pair."""
    folder = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = _cert("latentwire test CA", ca=True)
    hub_cert, hub_key = _cert("localhost", "latentwire test CA", ca_key, server=True)
    client_cert, client_key = _cert("alice", "latentwire test CA", ca_key)
    other_ca, other_key = _cert("someone else's CA", ca=True)
    stranger_cert, stranger_key = _cert("mallory", "someone else's CA", other_key)
    files = {"ca": _write_pair(folder, "ca", ca_cert, ca_key)[0]}
    files["hub_cert"], files["hub_key"] = _write_pair(folder, "hub", hub_cert, hub_key)
    files["client_cert"], files["client_key"] = _write_pair(folder, "client", client_cert, client_key)
    files["other_ca"] = _write_pair(folder, "other-ca", other_ca, other_key)[0]
    files["stranger_cert"], files["stranger_key"] = _write_pair(folder, "stranger", stranger_cert,
                                                                 stranger_key)
    return files


async def _pinged(url: str, **options) -> str:
    async with latentwire.connect(url, agent="pinger", connect_timeout=1, **options) as bus:
        sub = await bus.subscribe("ping")
        await bus.publish("ping", "pong")
        return (await sub.receive(timeout=5)).text


async def test_tls_refuses_plain_and_untrusting_clients(pki: dict[str, Path]) -> None:
    server = await serve(Hub(), port=0, tls_cert=pki["hub_cert"], tls_key=pki["hub_key"])
    try:
        url = server.url
        assert url.startswith("grpcs://")
        async with latentwire.connect(url, agent="ok", tls_ca=pki["ca"]) as ok:
            with pytest.raises(latentwire.ConnectError, match="use grpcs://"):  # plaintext to a TLS port
                await _pinged(url.replace("grpcs://", "grpc://"))
            with pytest.raises(latentwire.ConnectError, match="certificate is not trusted"):  # untrusted
                await _pinged(url, tls_ca=pki["other_ca"])
            sub = await ok.subscribe("t")
            await ok.publish("t", "still fine")
            assert (await sub.receive(timeout=5)).text == "still fine"
    finally:
        await server.stop(grace=0.5)


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(pki: dict[str, Path]) -> None:
    server = await serve(Hub(), port=0, tls_cert=pki["hub_cert"], tls_key=pki["hub_key"],
                         tls_client_ca=pki["ca"])
    mine = {"tls_ca": pki["ca"], "tls_cert": pki["client_cert"], "tls_key": pki["client_key"]}
    try:
        async with latentwire.connect(server.url, agent="ok", **mine) as ok:
            with pytest.raises(latentwire.ConnectError, match="pass tls_cert and tls_key"):  # no client cert
                await _pinged(server.url, tls_ca=pki["ca"])
            with pytest.raises(latentwire.ConnectError, match="does not trust"):  # cert of another CA
                await _pinged(server.url, tls_ca=pki["ca"], tls_cert=pki["stranger_cert"],
                              tls_key=pki["stranger_key"])
            assert await _pinged(server.url, **mine) == "pong"
            sub = await ok.subscribe("t")
            await ok.publish("t", "still fine")
            assert (await sub.receive(timeout=5)).text == "still fine"
    finally:
        await server.stop(grace=0.5)


@pytest.mark.parametrize("case", ["plain-to-tls", "untrusted-hub", "tls-to-plain", "wrong-name",
                                  "mtls-no-cert", "mtls-foreign-cert"])
async def test_tls_mistakes_say_what_is_wrong_at_once(pki: dict[str, Path], case: str) -> None:
    """Each TLS mistake is reported with its cause, well before the connect timeout."""
    tls = {"tls_cert": pki["hub_cert"], "tls_key": pki["hub_key"]}
    mtls = {**tls, "tls_client_ca": pki["ca"]}
    hub, scheme, options, reason = {
        "plain-to-tls": (tls, "grpc", {}, "closed the connection before gRPC started.*use grpcs://"),
        "untrusted-hub": (tls, "grpcs", {"tls_ca": pki["other_ca"]},
                          r"its TLS certificate is not trusted: unable to get local issuer certificate "
                          r"\(checked against .*other-ca.pem"),
        "tls-to-plain": ({}, "grpcs", {"tls_ca": pki["ca"]}, "does not speak TLS.*use grpc://"),
        "wrong-name": (tls, "grpcs", {"tls_ca": pki["ca"], "tls_server_name": "hub.example"},
                       "its TLS certificate does not name 'hub.example'"),
        "mtls-no-cert": (mtls, "grpcs", {"tls_ca": pki["ca"]},
                         "requires a client certificate.*pass tls_cert and tls_key"),
        "mtls-foreign-cert": (mtls, "grpcs", {"tls_ca": pki["ca"], "tls_cert": pki["stranger_cert"],
                                              "tls_key": pki["stranger_key"]},
                              "does not trust the client certificate .*stranger.pem"),
    }[case]
    server = await serve(Hub(), port=0, **hub)
    try:
        url = f"{scheme}://127.0.0.1:{server.port}"
        async with asyncio.timeout(10):  # a connect timeout of 60 s is not waited out
            with pytest.raises(latentwire.ConnectError, match=reason):
                async with latentwire.connect(url, agent="tls", connect_timeout=60, **options):
                    pass
    finally:
        await server.stop(grace=0.5)


async def test_an_unreachable_hub_says_why_after_the_timeout() -> None:
    with pytest.raises(latentwire.ConnectError,
                       match=r"no hub reachable at 127.0.0.1:1 within 0.5 s \(last attempt: .*refused"):
        async with latentwire.connect("grpc://127.0.0.1:1", agent="x", connect_timeout=0.5):
            pass


async def test_tls_flag_mistakes_are_config_errors(pki: dict[str, Path]) -> None:
    with pytest.raises(latentwire.ConfigError, match="--tls-cert and --tls-key must be given together"):
        await serve(Hub(), port=0, tls_cert=pki["hub_cert"])
    with pytest.raises(latentwire.ConfigError, match="--tls-client-ca needs --tls-cert and --tls-key"):
        await serve(Hub(), port=0, tls_client_ca=pki["ca"])
    with pytest.raises(latentwire.ConfigError, match="cannot read TLS file"):
        await serve(Hub(), port=0, tls_cert=pki["hub_cert"], tls_key=pki["hub_cert"].with_name("missing.key"))
    with pytest.raises(latentwire.ConfigError, match="tls_cert and tls_key must be given together"):
        latentwire.connect("grpcs://127.0.0.1:1", tls_cert=pki["client_cert"])


# -- the auth file and its tools ---------------------------------------------------------------


def test_hash_token_verifies_and_salts() -> None:
    a, b = hash_token("s3cret", n=1024), hash_token("s3cret", n=1024)
    assert a != b  # a fresh salt each time
    assert verify_token("s3cret", a) and verify_token("s3cret", b)
    assert not verify_token("s3cret ", a) and not verify_token("", a)


def test_hash_token_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert hash_token_main(["--new"]) == 0
    token_line, hash_line = capsys.readouterr().out.splitlines()
    token, stored = token_line.removeprefix("token: "), hash_line.removeprefix("token_hash: ")
    assert verify_token(token, stored)
    out = subprocess.run([sys.executable, "-m", "latentwire.cli", "hash-token"], input="typed-token-0123\n",
                         capture_output=True, text=True, check=True).stdout.strip()
    assert verify_token("typed-token-0123", out)


async def test_daemon_loads_an_auth_file_and_enforces_it(tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps(auth_config()))
    proc = subprocess.Popen([sys.executable, "-m", "latentwire.cli", "hub", "--port", "0",
                             "--auth-file", str(auth)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = proc.stdout.readline().rsplit(" ", 1)[1].strip()
        with pytest.raises(latentwire.Unauthenticated):
            async with latentwire.connect(url, agent="alice", token="wrong"):
                pass
        async with latentwire.connect(url, agent="alice", token=TOKENS["alice"]) as alice:
            with pytest.raises(latentwire.PermissionDenied):
                await alice.publish("control/x", "no")
            await alice.publish("sensors/x", "yes")
    finally:
        proc.terminate()
        proc.wait(10)


async def test_reloading_the_auth_file_applies_it_to_live_sessions(secure: HubEnv, tmp_path: Path) -> None:
    config = auth_config()
    path = tmp_path / "auth.json"
    async with agent(secure, "alice") as alice, agent(secure, "bob", reconnect_timeout=1) as bob:
        with pytest.raises(latentwire.PermissionDenied):
            await alice.publish("control/x", "not yet")
        config["agents"]["alice"]["publish"].append("control/#")  # widen alice's ACL ...
        del config["agents"]["bob"]  # ... and remove bob
        path.write_text(json.dumps(config))
        assert await reload_policy(secure.hub, path)
        await alice.publish("control/x", "now allowed")  # the live session has the new ACL
        with pytest.raises(latentwire.Unauthenticated):  # bob was cut off and cannot come back
            await bob.publish("control/bob", "x")
        path.write_text('{"agents": {}}')  # a bad edit keeps the policy in force
        assert not await reload_policy(secure.hub, path)
        await alice.publish("control/y", "still allowed")


async def test_daemon_reloads_the_auth_file_on_sighup(tmp_path: Path) -> None:
    config = auth_config()
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "latentwire.cli", "hub", "--port", "0",
                             "--auth-file", str(auth)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().rsplit(" ", 1)[1].strip()
        async with latentwire.connect(url, agent="alice", token=TOKENS["alice"]) as alice:
            with pytest.raises(latentwire.PermissionDenied):
                await alice.publish("control/x", "no")
            config["agents"]["alice"]["publish"] = ["control/#"]
            auth.write_text(json.dumps(config))
            proc.send_signal(signal.SIGHUP)
            async with asyncio.timeout(10):  # applied once the file is read again
                while True:
                    try:
                        await alice.publish("control/x", "yes")
                        break
                    except latentwire.PermissionDenied:
                        await asyncio.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)


# filter_within is what the subscribe ACL rests on: it must never let a filter reach a topic
# that its pattern does not.
_level = st.sampled_from(["a", "b", "c"])
_topic = st.lists(_level, min_size=1, max_size=4).map("/".join)
_filter = st.lists(st.sampled_from(["a", "b", "+"]), min_size=0, max_size=3).flatmap(
    lambda levels: st.sampled_from([levels + ["#"], levels] if levels else [["#"]])).map("/".join)


@settings(max_examples=300, deadline=None, database=None)
@given(pattern=_filter, flt=_filter, topic=_topic)
def test_filter_within_is_sound(pattern: str, flt: str, topic: str) -> None:
    if filter_within(pattern, flt) and topic_matches(flt, topic):
        assert topic_matches(pattern, topic)
