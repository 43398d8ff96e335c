"""The cluster-launcher configs pass Ray's own schema (after Ray fills in its defaults)."""
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", ["cluster.yaml", "configs/clusters/onprem.yaml"])
def test_cluster_config_is_valid(path):
    config = yaml.safe_load((ROOT / path).read_text())
    validate_config(prepare_config(config))
    assert any("pip install -e ~/raynas" in cmd for cmd in config["setup_commands"])


def test_aws_cluster_has_an_autoscaling_gpu_worker_type():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 < gpu["max_workers"] and config["head_node_type"] == "head"
