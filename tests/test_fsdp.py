"""FSDP2 sharding of CogFM on a CPU gloo mesh (Accelerate enables FSDP only on accelerator backends)."""

import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch.distributed.device_mesh import init_device_mesh

from cogfm_hf import CogFMForCausalLM
from cogfm_hf.training.fsdp import SHARDED_MODEL_DIR, export_consolidated, save_sharded, shard_cogfm

from .conftest import run_isolated_python, small_config

WORLD = 2
# Attention only, and every other mixer with Canon layers (small SSM shapes).
CONFIGS = {
    "attention": dict(qk_norm=True),
    "mixers": dict(
        qk_norm=True,
        layer_types=["hybrid", "conv"],
        canon_set="ABCD",
        mamba_d_ssm=64,
        mamba_d_head=16,
        mamba_d_state=8,
        mamba_chunk_size=4,
    ),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, directory: str, config_name: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        full = CogFMForCausalLM(small_config(**CONFIGS[config_name]))
        sharded = shard_cogfm(copy.deepcopy(full), mesh=init_device_mesh("cpu", (WORLD,)))
        assert sum(1 for m in sharded.modules() if type(m).__name__.startswith("FSDP")) == 3  # 2 layers + root
        ids = torch.randint(3, 97, (2, 16), generator=torch.Generator().manual_seed(1))  # same batch on both ranks

        full_loss = full(input_ids=ids, labels=ids).loss
        full_loss.backward()
        sharded_loss = sharded(input_ids=ids, labels=ids).loss
        sharded_loss.backward()
        torch.testing.assert_close(sharded_loss, full_loss, rtol=1e-5, atol=1e-6)
        for (name, a), (_, b) in zip(full.named_parameters(), sharded.named_parameters()):
            assert b.grad.placements[0].is_shard(), name
            torch.testing.assert_close(b.grad.full_tensor(), a.grad, rtol=1e-4, atol=1e-6, msg=name)

        save_sharded(sharded, directory)
        if rank == 0:
            torch.save(full.state_dict(), os.path.join(directory, "reference.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("config_name", CONFIGS)
def test_fsdp2_sharding_matches_unsharded_and_consolidates(tmp_path, config_name):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), config_name), nprocs=WORLD, join=True)
    assert len(list((tmp_path / SHARDED_MODEL_DIR).glob("*.distcp"))) == WORLD  # one shard file per rank

    config = small_config(**CONFIGS[config_name])
    export = export_consolidated(tmp_path / SHARDED_MODEL_DIR, tmp_path / "export", config)
    reference = torch.load(tmp_path / "reference.pt")
    consolidated = load_file(export / "model.safetensors")
    for name, value in reference.items():
        if name == "lm_head.weight":  # tied: stored once, as the embedding
            continue
        assert torch.equal(consolidated[name], value), name

    code = (
        "from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(export)!r}, trust_remote_code=True)\n"
        "print(type(m).__name__)\n"
    )
    result = run_isolated_python(code, cwd=tmp_path)
    assert result.returncode == 0 and "CogFMForCausalLM" in result.stdout, result.stderr[-2000:]
