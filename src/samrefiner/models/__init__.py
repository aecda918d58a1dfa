"""The model backends behind `PromptableModel`, and `load_model`, which picks one for a checkpoint.

- `loading`: `load_model` / `read_state_dict` (files, state dicts, folders, registry names, HF ids);
- `backends`: the registry of backend classes; `base` / `transformers_backend`: the protocol and the
  shared body of the backends; one module per family (`sam`, `sam_hq`, `sam2`, `sam3`, `edgetam`,
  `mobile_sam`, `lite_medsam`) and its checkpoint converter (`convert_*`);
- `registry`: the known model names; `download`: official files into the cache; `hub`: the Hugging
  Face Hub reachability probe; `speed`, `device`: precision, batching and device checks.
"""

from samrefiner.models.loading import load_model, read_state_dict

__all__ = ["load_model", "read_state_dict"]
