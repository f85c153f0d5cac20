"""``glue`` for exported notebooks: myst-nb's ``glue`` without myst-nb.

In the book, ``myst_nb.glue(name, value)`` stores a computed value that the text quotes
with ``{glue:text}`name```.  Exported notebooks import this function instead, so they
run with only ``fa_tutor[coursework]`` installed: it keeps the value's text (as myst-nb
stores it) in :data:`RECORDED` and, with ``display=True``, displays the value like
myst-nb; with ``display=False`` it shows nothing.  The export reads :data:`RECORDED` after
running a chapter to put the values into the notebook's text.
"""
from __future__ import annotations

RECORDED: dict[str, str] = {}


def glue(name: str, variable: object, display: bool = True) -> None:
    """Record ``variable``'s text under ``name``; display it if ``display``."""
    RECORDED[name] = glued_text(variable)
    if display:
        from IPython.display import display as show

        show(variable)


def glued_text(variable: object) -> str:
    """The value's ``text/plain`` form, as myst-nb stores it (``{glue:text}`` formats it)."""
    try:
        from IPython.core.formatters import format_display_data

        text = format_display_data(variable)[0].get("text/plain", repr(variable))
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        text = repr(variable)
    return str(text)
