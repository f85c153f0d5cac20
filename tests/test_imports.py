"""What ``import fa_tutor`` pulls in, and the declared requirements.

* importing the package and building and stepping a rule never imports the plotting
  stack (matplotlib, seaborn: ``fa_tutor.viz`` loads on first use) nor a private
  torch module (``fa_tutor.rules._torch_compat`` loads those lazily, where used);
* every line of requirements.txt is pinned, and the package's own imports are declared.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROBE = r"""
import json, sys, torch
import fa_tutor as ft
x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
for name in ("bp", "fa", "usf", "kp", "dfa", "fg_w"):
    ft.make_rule(name, ft.models.MLP(6, [5], 3), seed=0).step(x, y)
ft.data, ft.metrics, ft.training
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_and_a_training_step_load_no_plotting_stack():
    loaded = _modules_after(_PROBE)
    assert "fa_tutor.rules" in loaded
    for heavy in ("matplotlib", "seaborn", "fa_tutor.viz"):
        assert heavy not in loaded, f"{heavy} imported by import fa_tutor / a rule step"


def test_import_fa_tutor_loads_no_private_torch_module():
    loaded = _modules_after("import json, sys, fa_tutor as ft; ft.make_rule, ft.models\n"
                            "print(json.dumps(sorted(sys.modules)))")
    private = sorted(m for m in loaded if m.startswith("torch._decomp.decompositions_for_jvp"))
    assert not private, private


def test_viz_still_loads_on_first_use():
    pytest.importorskip("matplotlib")
    loaded = _modules_after("import json, sys, fa_tutor as ft; ft.viz\n"
                            "print(json.dumps(sorted(sys.modules)))")
    assert "fa_tutor.viz" in loaded and "matplotlib" in loaded


def test_every_requirement_is_pinned():
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = [line for line in lines if line and not line.startswith("#")]
    unpinned = [r for r in reqs if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", r)]
    assert not unpinned, f"unpinned requirements: {unpinned}"


def test_the_package_declares_what_it_imports():
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = {re.split(r"[<>=!\[ ]", d)[0].lower() for d in project["project"]["dependencies"]}
    for dist in ("torch", "numpy", "pandas", "tqdm", "scikit-learn", "mlxtend", "mnist1d",
                 "matplotlib", "seaborn", "pillow"):
        assert dist in deps, f"{dist} is imported by fa_tutor but not declared"
    torch_req = next(d for d in project["project"]["dependencies"] if d.startswith("torch"))
    floor = tuple(int(v) for v in re.search(r">=(\d+)\.(\d+)", torch_req).groups())
    assert floor >= (2, 5), f"{torch_req}: torch.OutOfMemoryError needs torch 2.5"


def test_sources_compile_without_warnings() -> None:
    """No invalid escape in a string of the package, the tools or the tests: a docstring's
    ``\\nabla`` or ``\\leftarrow`` outside a raw string is a newline or a warning, not LaTeX."""
    import warnings

    sources = [p for folder in ("fa_tutor", "tools", "tests") for p in (ROOT / folder).rglob("*.py")]
    assert len(sources) > 50
    found = []
    for path in sources:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compile(path.read_text(encoding="utf-8"), str(path), "exec")
        found += [f"{path.relative_to(ROOT)}: {w.message}" for w in caught]
    assert not found, found
