"""``tunebench validate``: a config file Snakemake would reject without naming it gets one sentence naming it."""

from __future__ import annotations

import pytest

from tunebench.commands import cli


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"seed: [1\n", "bad.yaml line 2, column 1 is not valid YAML"),
        (b"", "bad.yaml is empty"),
        (b"# only a comment\n", "bad.yaml is empty"),
        (b"seed: 4\xff\n", "bad.yaml is not UTF-8 text"),
        (None, "bad.yaml does not exist"),
    ],
)
def test_a_faulty_config_file_is_named_in_one_sentence(tmp_path, capsys, content, message):
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_bytes(content)
    assert cli.main(["validate", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(path) in err and "\n" not in err and "Traceback" not in err


def test_the_shipped_configs_are_valid(repo_root, capsys):
    files = [repo_root / "config" / "demo.yaml", repo_root / "examples" / "mathqa_choice" / "config.yaml"]
    for path in files:
        assert cli.main(["validate", "--config", str(path)]) == 0
        assert capsys.readouterr().out.strip() == f"{path}: valid"
