"""``arca._internal.fastjson``: the standard library's json, imported only when first used
(ADR 0056), so commands that touch no JSON do not load ``json``/``re``/``enum``."""

from __future__ import annotations

import json
import subprocess
import sys

from arca._internal.fastjson import json_dumps, json_loads


def test_same_answers_as_json() -> None:
    value = {"a": [1, 2.5, None, True], "é": "\u2603"}
    assert json_dumps(value) == json.dumps(value)
    assert json_dumps(value, ensure_ascii=False) == json.dumps(value, ensure_ascii=False)
    assert json_loads(json_dumps(value)) == value == json_loads(json_dumps(value).encode())


def test_importing_it_imports_no_json() -> None:
    code = ("import sys; import arca._internal.fastjson as f; "
            "assert 'json' not in sys.modules, 'json imported'; "
            "f.json_loads('[1]'); assert 'json' in sys.modules")
    subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path[:0] = {sys.path!r}; "
                    + code], check=True)
