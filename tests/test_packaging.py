import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_cfg_lists_every_package():
    # setup.cfg lists packages explicitly (modeling/ is mapped in from the top level), so a new
    # sub-package missing here would be absent from wheels while editable installs still work.
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cogfm_hf").rglob("__init__.py")}
    assert on_disk | {"cogfm_hf.modeling"} == listed
    assert config["options"]["package_dir"].split() == ["cogfm_hf.modeling", "=", "modeling"]


def test_modeling_folder_holds_only_the_checkpoint_files():
    files = {p.name for p in (ROOT / "modeling").iterdir() if p.suffix == ".py"}
    assert files == {
        "__init__.py",
        "configuration_cogfm.py",
        "modeling_cogfm.py",
        "mixers_cogfm.py",
        "coupling_cogfm.py",
    }
