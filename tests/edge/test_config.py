"""The gateway configuration: file, environment overrides, validation, file permissions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge.__main__ import main
from edge.config import DEFAULT_OUTBOX_PATH, ConfigError, load_config, parse_config
from peergrid_core.protocol import DEFAULT_PORT

KEY = "0123456789abcdef0123"
WALLET = "GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7"


def _data(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "home_assistant": {"url": "http://homeassistant.local:8123/", "token": "abc.def.ghi"},
        "device_id": "rpi-4b-prod-01",
        "nodes": [
            {"uid": "NODE_A", "host": "192.168.1.101", "key": KEY},
            {"uid": "NODE_B", "host": "node-b.local", "port": 7421, "key": KEY},
        ],
    }
    data.update(changes)
    return data


def _write(path: Path, data: dict[str, object], mode: int = 0o600) -> Path:
    path.write_text(yaml.safe_dump(data))
    path.chmod(mode)
    return path


def test_minimal_file_with_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path / "gateway.yaml", _data()), env={})
    assert config.home_assistant.url == "http://homeassistant.local:8123"
    assert config.home_assistant.token == "abc.def.ghi"
    assert config.device_id == "rpi-4b-prod-01"
    assert [n.uid for n in config.nodes] == ["NODE_A", "NODE_B"]
    assert config.nodes[0].port == DEFAULT_PORT
    assert config.nodes[1].port == 7421
    assert config.nodes[0].key_bytes == KEY.encode()
    assert config.cycle_s == 10.0
    assert config.lease_s == 30
    assert config.zeroconf is True
    assert config.outbox_path == DEFAULT_OUTBOX_PATH
    assert config.depin is None


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path / "gateway.yaml", _data()), env={})
    assert "abc.def.ghi" not in repr(config)
    assert KEY not in repr(config)


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "PEERGRID_HA_URL": "https://ha.example:8443",
        "PEERGRID_HA_TOKEN": "from-env",
        "PEERGRID_DEVICE_ID": "gw-2",
        "PEERGRID_CYCLE_S": "2.5",
        "PEERGRID_LEASE_S": "45",
        "PEERGRID_OUTBOX_PATH": str(tmp_path / "box.sqlite3"),
        "PEERGRID_ZEROCONF": "false",
        "UNRELATED": "x",
    }
    config = load_config(_write(tmp_path / "gateway.yaml", _data()), env=env)
    assert config.home_assistant.url == "https://ha.example:8443"
    assert config.home_assistant.token == "from-env"
    assert config.device_id == "gw-2"
    assert config.cycle_s == 2.5
    assert config.lease_s == 45
    assert config.outbox_path == tmp_path / "box.sqlite3"
    assert config.zeroconf is False


def test_token_from_environment_only_allows_a_readable_file(tmp_path: Path) -> None:
    data = _data(home_assistant={"url": "http://ha:8123"})
    data["nodes"] = [{"uid": "NODE_A", "host": "10.0.0.2", "key": None}]
    path = _write(tmp_path / "gateway.yaml", data, mode=0o644)
    config = load_config(path, env={"PEERGRID_HA_TOKEN": "tok"})
    assert config.home_assistant.token == "tok"
    assert config.nodes[0].key is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o666])
def test_refuses_token_file_readable_by_others(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "gateway.yaml", _data(), mode=mode)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.field == "home_assistant.token"
    assert "chmod 600" in err.value.message
    assert f"{mode:04o}" in err.value.message


def test_refuses_node_key_file_readable_by_others(tmp_path: Path) -> None:
    data = _data(home_assistant={"url": "http://ha:8123"})
    path = _write(tmp_path / "gateway.yaml", data, mode=0o644)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={"PEERGRID_HA_TOKEN": "tok"})
    assert err.value.field == "nodes.0.key"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"device_id": "has space"}, "device_id"),
        ({"cycle_s": 0}, "cycle_s"),
        ({"lease_s": 2}, "lease_s"),
        ({"lease_s": 3601}, "lease_s"),
        ({"zeroconf": "perhaps"}, "zeroconf"),
        ({"nodes": []}, "nodes"),
        ({"unknown_key": 1}, "unknown_key"),
        ({"home_assistant": {"url": "ftp://ha", "token": "t"}}, "home_assistant.url"),
        ({"home_assistant": {"url": "http://ha", "token": "two words"}}, "home_assistant.token"),
        ({"home_assistant": {"url": "http://ha"}}, "home_assistant.token"),
        ({"nodes": [{"uid": "NODE_A", "host": "h", "port": 70000}]}, "nodes.0.port"),
        ({"nodes": [{"uid": "NODE_A", "host": "h", "key": "short"}]}, "nodes.0.key"),
        ({"nodes": [{"uid": "bad uid", "host": "h"}]}, "nodes.0.uid"),
        (
            {"nodes": [{"uid": "NODE_A", "host": "a"}, {"uid": "NODE_A", "host": "b"}]},
            "nodes",
        ),
        ({"depin": {"wallet_address": "GNOTAWALLET"}}, "depin.wallet_address"),
    ],
)
def test_validation_errors_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_data(**changes), env={})
    assert err.value.field == field


def test_bad_environment_value_names_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_data(), env={"PEERGRID_CYCLE_S": "often"})
    assert err.value.field == "cycle_s"


def test_depin_settings() -> None:
    config = parse_config(
        _data(
            depin={
                "wallet_address": WALLET,
                "hardware_model": "Raspberry Pi 4B",
                "location": {"latitude": 52.52, "longitude": 13.4},
            }
        ),
        env={},
    )
    assert config.depin is not None
    assert config.depin.wallet_address == WALLET
    assert config.depin.location is not None
    assert config.depin.location.latitude == 52.52


@pytest.mark.parametrize(
    ("content", "field"),
    [("- a\n- b\n", "config"), ("key: [unclosed\n", "config"), ("", "home_assistant")],
)
def test_unusable_files(tmp_path: Path, content: str, field: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.field == field


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "absent.yaml", env={})
    assert err.value.field == "config"
    assert "absent.yaml" in err.value.message


def test_cli_check_and_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for variable in ("PEERGRID_HA_TOKEN", "PEERGRID_HA_URL", "PEERGRID_DEVICE_ID"):
        monkeypatch.delenv(variable, raising=False)
    good = _write(tmp_path / "good.yaml", _data())
    assert main(["--config", str(good), "--check"]) == 0
    loose = _write(tmp_path / "loose.yaml", _data(), mode=0o644)
    assert main(["--config", str(loose), "--check"]) == 2
    assert "home_assistant.token" in caplog.text


def test_example_configuration_is_valid(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "edge" / "gateway.example.yaml"
    copy = tmp_path / "gateway.yaml"
    copy.write_text(example.read_text())
    copy.chmod(0o600)
    config = load_config(copy, env={})
    assert [node.uid for node in config.nodes] == ["NODE_A", "NODE_B"]
    assert config.depin is None


def test_detected_hardware_model_is_a_valid_registration_value() -> None:
    from edge.gateway import detect_hardware_model
    from peergrid_core.payloads import DepinRegistration

    registration = DepinRegistration(
        device_id="gw-1",
        hardware_model=detect_hardware_model(),
        firmware_version="0.1.0",
        wallet_address=WALLET,
    )
    assert registration.hardware_model


def test_cli_unusable_outbox(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(
        tmp_path / "gateway.yaml",
        _data(outbox_path=str(tmp_path / "missing" / "outbox.sqlite3"), zeroconf=False),
    )
    assert main(["--config", str(path)]) == 2
    assert "outbox_path" in caplog.text
