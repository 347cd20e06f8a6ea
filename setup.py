"""smrl_ros: offline meta-RL with online self-supervision (SMAC) for ROS 2 robot arms.

ament_python package: colcon builds it on a ROS 2 install, and pip installs it in a plain venv.
Dependencies are ranges so users can install beside other suites (Meta-World pins MuJoCo 3.3);
the exact tested versions live in requirements.txt, and the MuJoCo floor is tested too
(test/test_mujoco_floor.py, make test-slow).
"""

from glob import glob

from setuptools import find_packages, setup

package_name = "smrl_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.rviz")),
        ("share/" + package_name + "/urdf", glob("urdf/*.urdf")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "setuptools",
        "numpy>=1.24",
        "mujoco>=3.3",
        "gymnasium>=1.0",
        "onnx>=1.16",
        "onnxruntime>=1.17",
        "safetensors>=0.4",
        "PyYAML>=6.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        # torch is needed for training and export, not on the robot side; evaluation's videos
        # (smrl eval --video) and the runs' TensorBoard event files come with it.
        "train": ["torch>=2.2", "tensorboard>=2.12", "imageio>=2.16", "imageio-ffmpeg>=0.4.8"],
        # MP4s of episodes (smrl data render, smrl eval --video); imageio-ffmpeg ships ffmpeg.
        "video": ["imageio>=2.16", "imageio-ffmpeg>=0.4.8"],
        # rosbag2 recordings (smrl data import-bag / export-bag), pure Python, no ROS install.
        "bag": ["rosbags>=0.11"],
        # Minari datasets (smrl data export-minari / import-minari), HDF5 storage; training and
        # the robot side never need it. LeRobotDataset export is absent: lerobot pins an older
        # torch (docs/guide.md, "Your data: Minari").
        "minari": ["minari[hdf5]>=0.5.4,<0.6"],
        "test": ["pytest", "hypothesis>=6.100"],
    },
    zip_safe=True,
    maintainer="smrl developers",
    maintainer_email="smrl@example.org",
    description="Offline meta-RL with online self-supervision (SMAC) for ROS 2 robot arms",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "smrl = smrl_train.cli:main",
            # The deployment path (issue 4): the MuJoCo sim bridge and the ONNX control node.
            "smrl_sim = smrl_ros.sim_node:main",
            "smrl_controller = smrl_ros.controller_node:main",
            # The data path (issue 5): explorer, adapter, trainer, and the controller with an
            # `enabled` switch the adapt graph uses.
            "smrl_explorer = smrl_ros.explorer_node:main",
            "smrl_adapter = smrl_ros.adapter_node:main",
            "smrl_trainer = smrl_ros.trainer_node:main",
        ],
    },
)
