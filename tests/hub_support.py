"""A hub cache written in the hub client's own layout, so that tests need no hub."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def add_repo(cache: Path, repo_type: str, repo_id: str, files: dict[str, bytes]) -> str:
    """Store ``files`` as one commit of ``repo_id`` in ``cache`` the way the hub client does and point the repo's
    ``main`` at it; returns the commit."""
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils.sha import git_hash

    folder = cache / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    commit = hashlib.sha1(json.dumps(sorted((n, git_hash(b)) for n, b in files.items())).encode()).hexdigest()
    for name, content in files.items():
        # Large (LFS) files are stored under their sha256, the others under their git blob hash.
        blob = hashlib.sha256(content).hexdigest() if name.endswith(".safetensors") else git_hash(content)
        (folder / "blobs").mkdir(parents=True, exist_ok=True)
        (folder / "blobs" / blob).write_bytes(content)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(folder / "blobs" / blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return commit
