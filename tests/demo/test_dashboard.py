"""The dashboard generator: entity ids, the layout's rules, and the files the repository ships."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from demo.dashboard import (
    DASHBOARD_FILE,
    DEMO_GATEWAY_NODES,
    DEMO_NODES,
    PACKAGE_FILE,
    SCRIPT_START_TRANSFER,
    Layout,
    dashboard,
    main,
    node_entity,
    package,
    render,
)
from demo.run import referenced_entities

ROOT = Path(__file__).parents[2]
SHIPPED = ROOT / "dashboards"


@pytest.mark.parametrize(
    ("domain", "uid", "name", "entity_id"),
    [
        ("sensor", "NODE_A", "Battery", "sensor.node_a_battery"),
        (
            "sensor",
            "NODE_A",
            "Energy received from peers",
            "sensor.node_a_energy_received_from_peers",
        ),
        ("select", "garage-7", "Mode", "select.garage_7_mode"),
        ("sensor", "Shed2", "Node state", "sensor.shed2_node_state"),
    ],
)
def test_node_entity_follows_home_assistants_naming(
    domain: str, uid: str, name: str, entity_id: str
) -> None:
    """Device name (the uid) and entity name, slugified, as Home Assistant names new entities."""
    assert node_entity(domain, uid, name) == entity_id


def test_layout_needs_a_direct_node() -> None:
    """Without a directly configured node there is nothing to control."""
    with pytest.raises(ValueError, match="nodes"):
        Layout(nodes=(), gateway_nodes=("GARAGE_1",))


def test_layout_refuses_uids_with_the_same_entity_ids() -> None:
    """Two uids that slugify alike would share entities."""
    with pytest.raises(ValueError, match="same entity ids"):
        Layout(nodes=("NODE_A", "node-a"))


@pytest.mark.parametrize("name", [DASHBOARD_FILE, PACKAGE_FILE])
def test_shipped_files_are_the_generators_output(name: str, tmp_path: Path) -> None:
    """``dashboards/`` holds exactly what the generator writes for the demo's nodes."""
    assert main(["--output-dir", str(tmp_path)]) == 0
    assert (SHIPPED / name).read_text() == (tmp_path / name).read_text()


def test_dashboard_shows_every_node() -> None:
    """Each node's gauge, voltage and power (Mode for direct nodes), in a section of its own."""
    layout = Layout(nodes=("NODE_A", "NODE_B"), gateway_nodes=("GARAGE_1",))
    entities = referenced_entities(dashboard(layout))

    for uid in ("node_a", "node_b"):
        assert {
            f"sensor.{uid}_battery",
            f"sensor.{uid}_voltage",
            f"sensor.{uid}_power",
            f"select.{uid}_mode",
            f"sensor.{uid}_transfer_progress",
            f"sensor.{uid}_energy_shared_to_peers",
        } <= entities
    assert {"sensor.garage_1_battery", "sensor.garage_1_voltage"} <= entities
    # A gateway's node has no Mode to select and no transfers of its own here.
    assert "select.garage_1_mode" not in entities
    assert "sensor.garage_1_transfer_progress" not in entities
    assert SCRIPT_START_TRANSFER in entities
    headings = [
        card["heading"]
        for section in dashboard(layout)["views"][0]["sections"]
        for card in section["cards"]
        if card["type"] == "heading"
    ]
    assert {"NODE_A", "NODE_B", "GARAGE_1", "Sharing ledger"} <= set(headings)


def test_package_form_and_script() -> None:
    """The form's selects list the direct nodes; the script hands the form to the action."""
    config = package(Layout(nodes=("NODE_A", "NODE_B", "NODE_C")))

    sender = config["input_select"]["peergrid_sender"]
    receiver = config["input_select"]["peergrid_receiver"]
    assert sender["options"] == receiver["options"] == ["NODE_A", "NODE_B", "NODE_C"]
    assert (sender["initial"], receiver["initial"]) == ("NODE_A", "NODE_C")
    (step,) = config["script"]["peergrid_start_transfer"]["sequence"]
    assert step["action"] == "peergrid.start_transfer"
    assert set(step["data"]) == {"sender", "receiver", "energy_wh"}
    assert "input_number.peergrid_transfer_energy" in step["data"]["energy_wh"]


def test_render_is_plain_yaml_with_a_header() -> None:
    """People read and paste these files: a header saying where they come from, no aliases."""
    text = render(package(Layout(nodes=DEMO_NODES)))

    assert text.startswith("# Written by `python -m demo.dashboard`")
    assert "&id" not in text
    assert "*id" not in text
    assert yaml.safe_load(text) == package(Layout(nodes=DEMO_NODES))


def test_main_writes_for_given_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--node`` and ``--gateway-node`` choose the nodes; the files land in ``--output-dir``."""
    assert (
        main(
            [
                "--node",
                "pg-1",
                "--node",
                "pg-2",
                "--gateway-node",
                "shed",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 0
    )

    board = yaml.safe_load((tmp_path / DASHBOARD_FILE).read_text())
    assert {"sensor.pg_1_battery", "sensor.pg_2_battery", "sensor.shed_battery"} <= (
        referenced_entities(board)
    )
    assert str(tmp_path / PACKAGE_FILE) in capsys.readouterr().out


def test_main_defaults_to_the_demo(tmp_path: Path) -> None:
    """Without ``--node``: the demo's nodes and its gateway's nodes."""
    assert main(["--output-dir", str(tmp_path)]) == 0

    entities = referenced_entities(yaml.safe_load((tmp_path / DASHBOARD_FILE).read_text()))
    for uid in (*DEMO_NODES, *DEMO_GATEWAY_NODES):
        assert node_entity("sensor", uid, "Battery") in entities


def test_main_refuses_a_bad_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A layout error is a usage error naming the problem, and nothing is written."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--node", "NODE_A", "--node", "node-a", "--output-dir", str(tmp_path)])

    assert exit_info.value.code == 2
    assert "same entity ids" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
