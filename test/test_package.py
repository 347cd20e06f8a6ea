"""The ament_python package metadata: package.xml format 3, data files, the ament index marker."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_package_xml_is_format_3_with_the_runtime_and_test_dependencies() -> None:
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "smrl_ros"
    exec_deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "std_msgs", "std_srvs", "geometry_msgs", "diagnostic_msgs",
            "visualization_msgs", "launch", "launch_ros"} <= exec_deps
    assert {"launch_pytest", "python3-pytest"} <= {e.text for e in root.findall("test_depend")}
    assert root.find("export/build_type").text == "ament_python"


def test_setup_installs_marker_package_xml_and_share_folders() -> None:
    text = (REPO / "setup.py").read_text()
    tree = ast.parse(text)
    assert (REPO / "resource" / "smrl_ros").is_file()
    for needle in ('"share/ament_index/resource_index/packages"', '"resource/" + package_name',
                   '"/launch"', '"/config"', 'glob("config/*.rviz")', '"/urdf"', '"package.xml"'):
        assert needle in text, needle
    assert "tests_require" not in text  # deprecated; extras_require["test"] instead
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"]
    assert calls and any(k.arg == "entry_points" for k in calls[0].keywords)


def test_setup_declares_ranges_and_requirements_pin_exact_versions() -> None:
    setup = (REPO / "setup.py").read_text()
    assert '"mujoco>=3.3"' in setup  # installable beside suites that pin MuJoCo 3.3.x
    pins = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    pins = [p for p in pins if p and not p.startswith("setuptools")]
    assert pins and all("==" in p for p in pins), pins
    assert "torch==2.13.0" in pins  # the local CPU build; an unpinned torch pulls CUDA
    # MP4s (smrl data render, smrl eval --video): pinned here, an extra of their own in setup.py.
    assert {p.split("==")[0] for p in pins} >= {"imageio", "imageio-ffmpeg"}
    assert '"video": ["imageio>=' in setup
    # Minari datasets (smrl data export-minari / import-minari): pinned with its HDF5 reader, an extra.
    assert {p.split("==")[0] for p in pins} >= {"minari", "h5py"}
    assert '"minari": ["minari[hdf5]>=' in setup


def test_rviz_view_shows_the_arm_and_the_sim_markers_in_the_base_frame() -> None:
    import yaml

    from smrl_train.robot.urdf import load_urdf

    view = yaml.safe_load((REPO / "config" / "smrl.rviz").read_text())["Visualization Manager"]
    topics = {d["Class"].split("/")[-1]: d.get("Topic", d.get("Description Topic", {})).get("Value")
              for d in view["Displays"]}
    assert topics["RobotModel"] == "/robot_description" and topics["MarkerArray"] == "/smrl_sim/markers"
    assert view["Global Options"]["Fixed Frame"] == load_urdf(REPO / "urdf" / "smrl_arm.urdf", "ee_link").base_link
