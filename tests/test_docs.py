"""The README's config reference lists every key with its true default."""

from __future__ import annotations

import re
from pathlib import Path

from gptiny_cli.config import RunConfig, toml_value

README = Path(__file__).resolve().parent.parent / "README.md"


def test_config_reference_lists_every_key_with_its_default():
    rows = dict(re.findall(r"^\| `(\w+\.\w+)` \| `([^`]*)` \|", README.read_text(encoding="utf-8"), re.MULTILINE))
    expected = {f"{section}.{key}": toml_value(value)
                for section, values in RunConfig().to_dict().items() for key, value in values.items()}
    assert rows == expected
