"""The compute interface's guards (issue 15), without a cluster: what may cross to an engine,
and a node.yaml's ``compute:`` section."""

from __future__ import annotations

import numpy as np
import pytest

from federation.compute import ComputeError, check_task_args
from federation.crypto.histogram import _hist_task
from federation.crypto.pool import worker_task
from federation.errors import ConfigError
from parties.config import ComputeConfig, NodeConfig


def test_plain_data_crosses():
    config = (b"n", b"hs", 224, 10, True, None, None)
    check_task_args(worker_task, (config, "encrypt", b"\x00" * 512, "djn"))
    check_task_args(_hist_task, (b"", 512, np.zeros((4, 2), dtype=np.int64), 8, 12345))


@pytest.mark.parametrize(
    "arg",
    [
        {"a": 1},
        [b"x"],
        object(),
        np.array([b"x", None], dtype=object),
        (b"ok", {"nested": 1}),
    ],
    ids=["dict", "list", "object", "object-array", "nested-dict"],
)
def test_anything_else_is_refused_before_it_is_sent(arg):
    with pytest.raises(ComputeError, match="cross to a compute engine"):
        check_task_args(worker_task, (arg,))


def test_only_module_level_kernels_of_the_runtime_run_on_an_engine():
    with pytest.raises(ComputeError, match="module-level kernels"):
        check_task_args(lambda: None, ())
    with pytest.raises(ComputeError, match="module-level kernels"):
        check_task_args(np.sum, (b"",))


def test_compute_config_needs_an_address_for_ray_and_keeps_local_plain():
    assert ComputeConfig().spec().engine == "local"
    with pytest.raises(ValueError, match="needs an address"):
        ComputeConfig(engine="ray")
    with pytest.raises(ValueError, match="engine 'ray' only"):
        ComputeConfig(address="auto")
    spec = ComputeConfig(engine="ray", address="ray://head:10001", num_cpus=64).spec()
    assert spec.describe() == "Ray cluster at ray://head:10001 (64 CPUs)"


def test_a_node_yaml_compute_section_is_validated_with_its_field_named(tmp_path):
    from parties.config import load_node_config

    path = tmp_path / "node.yaml"
    path.write_text(
        "node_id: tax\nrole: holder\ntls: {ca: ca.pem, cert: c.pem, key: k.pem}\n"
        "compute: {engine: ray, adress: auto}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_node_config(path)
    assert "compute" in str(err.value) and "adress" in str(err.value)
    assert NodeConfig.model_fields["compute"].default_factory is not None
