"""Session crypto against the golden frames: proofs, keys, MACs, replay and reorder."""

from __future__ import annotations

import pytest

from peergrid_core.errors import PeerGridProtocolError, PeerGridValidationError
from peergrid_core.protocol import (
    ErrorCode,
    FrameError,
    Role,
    SessionSecrets,
    SignedSession,
    key_from_text,
    new_nonce,
    parse_controller_message,
    parse_node_message,
    validate_key,
)
from peergrid_core.protocol.auth import proofs_match
from peergrid_core.protocol.frames import decode_body, strip_line

from .protocol_golden import entry, golden, key, line


def _secrets() -> SessionSecrets:
    return SessionSecrets.derive(key(), line("hello"), golden()["client_nonce"])


def _sessions_after_conversation() -> tuple[SignedSession, SignedSession]:
    """Controller and node sessions that have both processed the whole conversation."""
    controller = SignedSession(secrets=_secrets(), role=Role.CONTROLLER)
    node = SignedSession(secrets=_secrets(), role=Role.NODE)
    for step in golden()["conversation"]:
        if "mac" not in step:
            continue
        raw = step["line"].encode()
        if step["dir"] == "c2n":
            node.open(raw)
            controller.sent_seq += 1
        else:
            controller.open(raw)
            node.sent_seq += 1
    return controller, node


def test_derived_values_match_golden() -> None:
    """Hello digest, both proofs and both direction keys are the golden ones."""
    derived = golden()["derived"]
    secrets = _secrets()
    assert secrets.hello_sha256 == derived["hello_sha256"]
    assert secrets.client_proof == derived["client_proof"]
    assert secrets.node_proof == derived["node_proof"]
    assert secrets.k_c2n.hex() == derived["k_c2n"]
    assert secrets.k_n2c.hex() == derived["k_n2c"]
    assert SessionSecrets.derive(key(), line("hello")[:-1], golden()["client_nonce"]).k_c2n == (
        secrets.k_c2n
    )


def test_golden_handshake_lines_carry_the_proofs() -> None:
    """The auth and auth_ok lines carry exactly the derived proofs."""
    auth = parse_controller_message(decode_body(strip_line(line("auth"))))
    auth_ok = parse_node_message(decode_body(strip_line(line("auth_ok"))))
    assert auth.mac == _secrets().client_proof  # type: ignore[union-attr]
    assert auth_ok.mac == _secrets().node_proof  # type: ignore[union-attr]
    assert proofs_match(_secrets().node_proof, auth_ok.mac)  # type: ignore[union-attr]
    assert not proofs_match(_secrets().node_proof, "0" * 64)
    assert not proofs_match(_secrets().node_proof, "é")


def test_any_change_to_the_hello_changes_every_secret() -> None:
    """The proofs bind the whole hello line: a downgraded hello fails authentication."""
    tampered = line("hello").replace(b"hmac-sha256", b"none")
    other = SessionSecrets.derive(key(), tampered, golden()["client_nonce"])
    secrets = _secrets()
    assert other.client_proof != secrets.client_proof
    assert other.node_proof != secrets.node_proof
    assert other.k_c2n != secrets.k_c2n


def test_seal_and_open_reproduce_the_golden_conversation() -> None:
    """Each signed line is re-created byte for byte by the side that sends it."""
    controller = SignedSession(secrets=_secrets(), role=Role.CONTROLLER)
    node = SignedSession(secrets=_secrets(), role=Role.NODE)
    for step in golden()["conversation"]:
        if "mac" not in step:
            continue
        raw = step["line"].encode()
        sender, receiver = (controller, node) if step["dir"] == "c2n" else (node, controller)
        assert receiver.open(raw) == step["body"]
        # seal() renumbers the body itself; hand it without seq to prove that.
        body = {k: v for k, v in step["body"].items() if k != "seq"}
        assert sender.seal(body) == raw, step["name"]
    assert controller.sent_seq + 1 == golden()["next_seq"]["c2n"]
    assert node.sent_seq + 1 == golden()["next_seq"]["n2c"]


@pytest.mark.parametrize("case", golden()["rejections"], ids=lambda c: c["name"])
def test_node_rejects_forged_replayed_and_reordered_lines(case: dict[str, object]) -> None:
    """Bad MAC, wrong-direction key, replay, gap and unsigned lines are fatal and not acted on."""
    controller, node = _sessions_after_conversation()
    expected_before = node.received_seq
    with pytest.raises(FrameError) as err:
        node.open(str(case["line"]).encode())
    assert err.value.code == case["code"]
    assert err.value.fatal
    assert node.received_seq == expected_before
    # The node's answer is the golden err line, signed with its next sequence number.
    assert node.seal(dict(case["expect_body"])) == str(case["expect_line"]).encode()  # type: ignore[call-overload]
    # The controller accepts that err line.
    assert controller.open(str(case["expect_line"]).encode())["code"] == case["code"]


@pytest.mark.parametrize("case", golden()["client_rejections"], ids=lambda c: c["name"])
def test_controller_rejects_forged_and_replayed_node_lines(case: dict[str, str]) -> None:
    """Forged telemetry, a replayed status and a reflected frame are refused."""
    controller, _ = _sessions_after_conversation()
    before = controller.received_seq
    with pytest.raises(FrameError) as err:
        controller.open(case["line"].encode())
    assert err.value.code == case["code"]
    assert controller.received_seq == before


def test_reordered_lines_fail_even_when_each_is_authentic() -> None:
    """Swapping two authentic lines fails at the first one (gap), then at the second (replay)."""
    node = SignedSession(secrets=_secrets(), role=Role.NODE)
    first, second = line("cmd_supply"), line("cmd_supply_renew")
    with pytest.raises(FrameError) as gap:
        node.open(second)
    assert gap.value.code is ErrorCode.BAD_SEQ
    node.open(first)
    node.open(second)
    with pytest.raises(FrameError) as replay:
        node.open(first)
    assert replay.value.code is ErrorCode.BAD_SEQ


def test_sequence_space_exhaustion_forces_a_new_session() -> None:
    """The sender refuses to wrap its sequence number."""
    session = SignedSession(secrets=_secrets(), role=Role.NODE)
    session.sent_seq = 2**31 - 1
    with pytest.raises(PeerGridProtocolError):
        session.seal({"t": "ping"})


def test_secrets_never_show_in_repr() -> None:
    """Logging a session's secrets cannot leak keys."""
    text = repr(_secrets()) + repr(SignedSession(secrets=_secrets(), role=Role.NODE))
    assert golden()["derived"]["k_c2n"] not in text
    assert _secrets().client_proof not in text


@pytest.mark.parametrize("size", [0, 15, 65])
def test_key_length_is_validated(size: int) -> None:
    """Keys are 16 to 64 bytes; anything else names the ``key`` field."""
    with pytest.raises(PeerGridValidationError) as err:
        validate_key(b"k" * size)
    assert err.value.field == "key"


def test_key_from_text_and_nonces() -> None:
    """Text keys are their UTF-8 bytes; nonces are fresh 32-hex strings."""
    assert key_from_text("peergrid-golden-key-0001") == key()
    assert validate_key(b"k" * 64) == b"k" * 64
    nonces = {new_nonce() for _ in range(8)}
    assert len(nonces) == 8
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in nonces)


def test_err_after_auth_is_not_an_unsigned_line() -> None:
    """The golden bad-mode err is signed and answers request 6."""
    err = entry("err_bad_mode")
    assert err["body"]["id"] == 6
    assert err["line"].startswith(err["mac"] + " ")
