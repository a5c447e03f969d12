"""FSDP2 for CogFM: the sharding training/accelerate/fsdp.yaml asks Accelerate for, and checkpoint export.

    python -m cogfm_hf.training.fsdp export CHECKPOINT/pytorch_model_fsdp_0 OUTPUT_DIR --config CHECKPOINT

`shard_cogfm` applies `fully_shard` to every decoder layer and then to the root, which is what
Accelerate's TRANSFORMER_BASED_WRAP with `CogFMDecoderLayer` does; tests run it on a CPU gloo mesh,
since Accelerate enables FSDP only on accelerator backends. Sharded checkpoints use Accelerate's layout
(`pytorch_model_fsdp_0/`, DCP files of {"model": state_dict}); `export_consolidated` merges one with
Accelerate's `merge_fsdp_weights` into a Hub-ready CogFM checkpoint.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint import save as dcp_save
from torch.distributed.checkpoint.state_dict import get_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from ..console import exit_with
from ..modeling.configuration_cogfm import CogFMConfig
from ..modeling.modeling_cogfm import CogFMForCausalLM

SHARDED_MODEL_DIR = "pytorch_model_fsdp_0"  # Accelerate's name for a sharded model checkpoint


def shard_cogfm(
    model: CogFMForCausalLM,
    mesh=None,
    reshard_after_forward: bool = True,
    mp_policy: MixedPrecisionPolicy | None = None,
) -> CogFMForCausalLM:
    """FSDP2 with one unit per decoder layer plus the root (embeddings, final norm, head)."""
    kwargs = dict(mesh=mesh, reshard_after_forward=reshard_after_forward)
    if mp_policy is not None:
        kwargs["mp_policy"] = mp_policy
    for layer in model.model.layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def save_sharded(model: torch.nn.Module, checkpoint_dir: Path) -> Path:
    """Each rank writes its shards (collective: call on every rank)."""
    target = Path(checkpoint_dir) / SHARDED_MODEL_DIR
    dcp_save({"model": get_model_state_dict(model)}, storage_writer=FileSystemWriter(str(target)))
    return target


class _MetadataUnpickler(pickle.Unpickler):
    """Loads only what DCP's `.metadata` is made of: its own metadata classes, torch sizes, dtypes and layouts,
    paths. Anything else (`os.system`, `builtins.eval`...) is refused before it can run."""

    def find_class(self, module: str, name: str):
        allowed = (
            (module.startswith("torch.distributed.checkpoint.") and not name.startswith("__"))
            or (module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)))
            or (module == "torch.serialization" and name == "_get_layout")
            or (module == "pathlib" and name in {"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"})
            or (module == "collections" and name == "OrderedDict")
        )
        if not allowed:
            raise pickle.UnpicklingError(f"{module}.{name}")
        found = super().find_class(module, name)
        if module.startswith("torch.distributed.checkpoint.") and not isinstance(found, type):
            raise pickle.UnpicklingError(f"{module}.{name} (not a class)")
        return found


def check_dcp_metadata(directory: Path) -> None:
    """DCP checkpoints (FSDP shards) describe themselves in `.metadata`, a pickle that torch unpickles in full on
    load: a crafted one runs code. Read it first with an unpickler that admits only DCP's own classes, and
    refuse the directory if it holds anything else."""
    metadata = Path(directory) / ".metadata"
    if not metadata.is_file():
        raise ValueError(f"{directory}: no .metadata, so not a torch.distributed.checkpoint directory")
    try:
        with metadata.open("rb") as handle:
            _MetadataUnpickler(handle).load()
    except (pickle.UnpicklingError, AttributeError, EOFError, ValueError) as error:
        raise ValueError(
            f"{metadata}: refused, it is not plain checkpoint metadata ({error}); it could run code when loaded. "
            "Load only checkpoints written by your own runs"
        ) from None


def export_consolidated(
    sharded_dir: Path, output_dir: Path, config: CogFMConfig, tokenizer_dir: Path | None = None
) -> Path:
    """Merge a sharded checkpoint into one CogFM checkpoint that loads anywhere (trust_remote_code)."""
    from accelerate.utils import merge_fsdp_weights
    from safetensors.torch import load_file

    check_dcp_metadata(sharded_dir)
    with tempfile.TemporaryDirectory() as scratch:
        merge_fsdp_weights(str(sharded_dir), scratch, safe_serialization=True)
        state_dict = load_file(str(Path(scratch) / "model.safetensors"))
    model = CogFMForCausalLM(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{sharded_dir}: does not match the config: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(output_dir)
    if tokenizer_dir is not None:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (Path(tokenizer_dir) / name).exists():
                shutil.copy(Path(tokenizer_dir) / name, Path(output_dir) / name)
    return Path(output_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m cogfm_hf.training.fsdp",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="merge a sharded checkpoint into a Hub-ready one")
    export.add_argument("sharded_dir", type=Path)
    export.add_argument("output_dir", type=Path)
    export.add_argument("--config", type=Path, required=True, help="a directory with the run's config.json")
    export.add_argument("--tokenizer", type=Path, help="a directory with the tokenizer to copy alongside")
    args = parser.parse_args(argv)
    if not (args.config / "config.json").is_file():
        sys.exit(f"export error: --config {args.config} holds no config.json (give the run's checkpoint directory)")
    config = CogFMConfig.from_pretrained(args.config)
    try:
        print(export_consolidated(args.sharded_dir, args.output_dir, config, args.tokenizer or args.config))
    except ValueError as error:  # not a sharded checkpoint, a refused .metadata, weights that do not fit the config
        exit_with("export error", error)


if __name__ == "__main__":
    main()
