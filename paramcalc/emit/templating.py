"""The jinja2 environment: templates from the top-level ``templates/`` folder.

In a wheel the folder ships as ``paramcalc/templates``; in a source checkout (editable install)
it is the repository's ``templates/``. Rendering uses ``StrictUndefined``: a template that names
something the emitter did not provide fails loudly instead of printing nothing.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["render", "template_dir"]


def template_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("paramcalc templates not found (expected paramcalc/templates)")


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(name: str, **context: Any) -> str:
    """Render ``templates/<name>`` with ``context``."""
    return _environment().get_template(name).render(**context)
