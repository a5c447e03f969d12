"""Package marker so the package can import these files as `cogfm_hf.modeling`; checkpoints copy only
`configuration_cogfm.py` and `modeling_cogfm.py`, never this file."""
