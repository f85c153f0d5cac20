"""MyST markdown → markdown that plain Jupyter, JupyterLab and Colab render.

The book's chapters use Sphinx syntax a notebook viewer shows as code or literal text:
directives (```` ```{math} ````, ```` ```{prf:theorem} ````, ```` ```{exercise} ````,
``{literalinclude}``, ``{list-table}`` …), roles (``{eq}``, ``{ref}``, ``{prf:ref}``,
``{numref}``, ``{cite}``, ``{glue:text}``) and targets (``(label)=``).  :class:`BookIndex`
numbers what the book numbers (equations, theorems, exercises and tables as
"chapter.n", chapter numbers from ``_toc.yml``) and :func:`to_markdown` writes each
construct as what the built book shows: ``$$…\\tag{5.1}$$``, "Theorem 5.2 (title)",
"Exercise 3.1" headings, section titles, author–year citations, glued values and the
listed source code.
"""
from __future__ import annotations

import ast
import re
import textwrap
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

OPENER = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>.*)$")
ROLE_OR_CODE = re.compile(r"\{(?P<name>[\w:-]+)\}`(?P<content>[^`]*)`|``.*?``|`[^`\n]*`")
TARGET = re.compile(r"^\((?P<label>[\w.:-]+)\)=[ \t]*$", re.M)
DOLLAR_LABEL = re.compile(r"^\$\$[ \t]*\((?P<label>[\w.:-]+)\)[ \t]*$")
EXPLICIT = re.compile(r"^(?P<text>.*?)\s*<(?P<label>[^<>]+)>$", re.S)  # {ref}`text <label>`

PRF_TYPES = {  # sphinx-proof: each type is numbered on its own, per chapter
    "axiom": "Axiom", "theorem": "Theorem", "lemma": "Lemma", "algorithm": "Algorithm",
    "definition": "Definition", "remark": "Remark", "conjecture": "Conjecture",
    "corollary": "Corollary", "criterion": "Criterion", "example": "Example",
    "property": "Property", "observation": "Observation", "proposition": "Proposition",
    "assumption": "Assumption", "notation": "Notation",
}
ADMONITIONS = {"note": "Note", "warning": "Warning", "tip": "Tip", "important": "Important",
               "hint": "Hint", "caution": "Caution", "attention": "Attention",
               "danger": "Danger", "error": "Error", "seealso": "See also"}


class MystError(ValueError):
    """MyST syntax the converter does not know, or a reference it cannot resolve."""


@dataclass
class Block:
    """One directive: name, argument (title), options, body, and the fence's indent."""
    name: str
    arg: str
    options: dict[str, str]
    body: str
    indent: str = ""


def parse_blocks(text: str) -> list[str | Block]:
    """Split ``text`` into plain text and top-level directive blocks (nested ones stay in
    their parent's body; an unclosed directive runs to the end of the text)."""
    parts: list[str | Block] = []
    lines = text.split("\n")
    plain: list[str] = []
    i = 0
    while i < len(lines):
        m = OPENER.match(lines[i])
        if not m:
            plain.append(lines[i])
            i += 1
            continue
        fence = m["fence"]
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        body = [ln[len(m["indent"]):] if ln.startswith(m["indent"]) else ln
                for ln in lines[i + 1:j]]
        options: dict[str, str] = {}
        while body and (opt := re.match(r"^:([\w-]+):[ \t]*(.*)$", body[0])):
            options[opt[1]] = opt[2].strip()
            body.pop(0)
        if plain:
            parts.append("\n".join(plain))
            plain = []
        parts.append(Block(m["name"], m["arg"].strip(), options, "\n".join(body).strip("\n"),
                           m["indent"]))
        i = j + 1
    if plain:
        parts.append("\n".join(plain))
    return parts


# --- what the book numbers ---------------------------------------------------------

@dataclass
class BookIndex:
    """Labels of the whole book → the text a reference to them shows."""
    chapter_numbers: dict[str, int] = field(default_factory=dict)   # page stem -> number
    titles: dict[str, str] = field(default_factory=dict)            # page stem -> title
    refs: dict[str, str] = field(default_factory=dict)              # {ref}: section titles
    equations: dict[str, str] = field(default_factory=dict)         # {eq}: "(5.1)"
    numbered: dict[str, str] = field(default_factory=dict)          # {prf:ref}/{numref}
    exercises: dict[str, str] = field(default_factory=dict)         # label -> "Exercise 5.1"
    bibliography: dict[str, dict[str, str]] = field(default_factory=dict)
    macros: dict[str, object] = field(default_factory=dict)         # LaTeX macros

    @classmethod
    def from_book(cls, root: Path) -> "BookIndex":
        """Read ``_toc.yml``, every page it lists, ``_config.yml`` and the bibliography."""
        toc = yaml.safe_load((root / "_toc.yml").read_text())
        config = yaml.safe_load((root / "_config.yml").read_text())
        index = cls()
        pages = [(toc["root"], False)]
        number = 0
        for part in toc.get("parts", []):
            for chapter in part.get("chapters", []):
                pages.append((chapter["file"], bool(part.get("numbered"))))
        for page, numbered in pages:
            path = root / f"{page}.md"
            if not path.exists():
                continue
            stem = Path(page).stem
            if numbered:
                number += 1
                index.chapter_numbers[stem] = number
            index._scan(stem, path.read_text(), number if numbered else None)
        for bib in config.get("bibtex_bibfiles", []):
            index.bibliography.update(parse_bibtex((root / bib).read_text()))
        index.macros = (config.get("sphinx", {}).get("config", {}).get("mathjax3_config", {})
                        .get("tex", {}).get("macros", {}))
        return index

    def _scan(self, stem: str, text: str, chapter: int | None) -> None:
        """Number one page's labelled items in document order, as Sphinx does."""
        counters: dict[str, int] = {}

        def number(kind: str) -> str:
            counters[kind] = counters.get(kind, 0) + 1
            return f"{chapter}.{counters[kind]}" if chapter is not None else str(counters[kind])

        text = re.sub(r"^---\n.*?\n---\n", "", text, count=1, flags=re.S)  # front matter
        lines = text.split("\n")
        pending: list[str] = []
        for i, line in enumerate(lines):
            if t := TARGET.match(line):
                pending.append(t["label"])
                continue
            if h := re.match(r"^(#{1,6})\s+(.*)$", line):
                title = h[2].strip()
                if len(h[1]) == 1 and stem not in self.titles:
                    self.titles[stem] = title
                for label in pending:
                    self.refs[label] = title
                pending = []
                continue
            if line.strip():
                pending = []
            if d := DOLLAR_LABEL.match(line):
                self.equations[d["label"]] = f"({number('eq')})"
                continue
            m = OPENER.match(line)
            if not m:
                continue
            options = {}
            for following in lines[i + 1:]:
                opt = re.match(r"^\s*:([\w-]+):[ \t]*(.*)$", following)
                if not opt:
                    break
                options[opt[1]] = opt[2].strip()
            name, label = m["name"], options.get("label") or options.get("name")
            if name == "math" and label:
                self.equations[label] = f"({number('eq')})"
            elif name.startswith("prf:") and name[4:] in PRF_TYPES:
                kind = PRF_TYPES[name[4:]]
                if "nonumber" in options:
                    text_ = kind
                else:
                    text_ = f"{kind} {number(name)}"
                if label:
                    self.numbered[label] = text_
            elif name in ("exercise", "exercise-start") and "nonumber" not in options:
                n = number("exercise")
                if label:
                    self.exercises[label] = f"Exercise {n}"
                    self.numbered[label] = f"Exercise {n}"
            elif name in ("list-table", "table", "csv-table") and label:
                self.numbered[label] = f"Table {number('table')}"
            elif name == "figure" and label:
                self.numbered[label] = f"Fig. {number('figure')}"

    # --- references -----------------------------------------------------------------

    def resolve(self, role: str, content: str, glued: dict[str, str] | None, where: str) -> str:
        """The text the built book shows for the role ``{role}`content```."""
        explicit = EXPLICIT.match(content) if role != "glue:text" else None
        label = explicit["label"].strip() if explicit else content.strip()
        text = explicit["text"] if explicit else None
        if role == "eq":
            return text or self._lookup(self.equations, label, role, where)
        if role == "ref":
            return text or self._lookup({**self.numbered, **self.titles, **self.refs}, label,
                                        role, where)
        if role == "prf:ref":
            return text or self._lookup(self.numbered, label, role, where)
        if role == "numref":
            found = self._lookup(self.numbered, label, role, where)
            if text:
                return text.replace("%s", found.split(" ", 1)[-1]).replace(
                    "{number}", found.split(" ", 1)[-1])
            return found
        if role in ("cite", "cite:p", "cite:t", "cite:ps", "cite:ts"):
            return self.cite(content, where, textual=role.startswith("cite:t"))
        if role == "math":
            return f"${content}$"
        if role == "glue:text":
            return glue_text({} if glued is None else glued, content, where)
        if role == "doc":
            return text or self.titles.get(Path(label).stem, label)
        raise MystError(f"{where}: unknown role {{{role}}}; known: eq, ref, prf:ref, numref, "
                        "cite, math, glue:text, doc")

    @staticmethod
    def _lookup(table: dict[str, str], label: str, role: str, where: str) -> str:
        if label not in table:
            raise MystError(f"{where}: {{{role}}}`{label}` names no label of the book")
        return table[label]

    def cite(self, keys: str, where: str, textual: bool = False) -> str:
        """Author–year text of a citation: (Lillicrap et al., 2016; Nøkland, 2016)."""
        parts = []
        for key in (k.strip() for k in keys.split(",")):
            if key not in self.bibliography:
                raise MystError(f"{where}: citation {key!r} is not in the bibliography")
            entry = self.bibliography[key]
            parts.append((author_short(entry.get("author", "")), entry.get("year", "n.d.")))
        if textual:
            return "; ".join(f"{a} ({y})" for a, y in parts)
        return "(" + "; ".join(f"{a}, {y}" for a, y in parts) + ")"

    def references(self, keys: list[str]) -> str:
        """A markdown "References" section for the cited ``keys`` (sorted by author)."""
        entries = sorted((self.bibliography[k] for k in dict.fromkeys(keys)),
                         key=lambda e: (e.get("author", ""), e.get("year", "")))
        return "## References\n\n" + "\n".join(f"- {reference(e)}" for e in entries)

    def expand_macros(self, text: str) -> str:
        """The book's argument-free LaTeX macros (``\\R`` …) written out, outside code, so
        the math renders in any viewer (MathJax or KaTeX) without definitions."""
        simple = {n: v for n, v in self.macros.items() if isinstance(v, str)}
        if not simple:
            return text
        pattern = re.compile(r"\\(" + "|".join(map(re.escape, simple)) + r")(?![A-Za-z])")
        pieces = re.split(r"(^```.*?^```[ \t]*$)", text, flags=re.M | re.S)
        for k in range(0, len(pieces), 2):
            pieces[k] = re.sub(r"``.*?``|`[^`\n]*`|[^`]+|`", lambda m: m[0] if m[0].startswith(
                "`") else pattern.sub(lambda n: simple[n[1]], m[0]), pieces[k])
        return "".join(pieces)

    def macro_definitions(self) -> str:
        """The book's macros that take arguments, as MathJax definitions (one inline-math
        span); argument-free ones are expanded in place (:meth:`expand_macros`)."""
        defs = []
        for name, value in self.macros.items():
            if isinstance(value, list):
                body, nargs = value[0], int(value[1])
                defs.append(f"\\def\\{name}{''.join(f'#{i + 1}' for i in range(nargs))}"
                            f"{{{body}}}")
        return f"${' '.join(defs)}$" if defs else ""


def glue_text(glued: dict[str, str], content: str, where: str) -> str:
    """``{glue:text}`name``` or ``name:format``, as myst-nb renders the stored text/plain."""
    name, _, fmt = content.partition(":")
    if name not in glued:
        raise MystError(f"{where}: no glued value {name!r} (the chapter's run did not glue it)")
    try:
        value = ast.literal_eval(glued[name])  # removes a string's quotes
    except (SyntaxError, ValueError):
        value = glued[name]
    if not fmt:
        return str(value)
    kind = fmt[-1]
    if kind == "s":
        value = str(value)
    elif kind in "bcdoxX":
        value = int(value)
    elif kind in "eEfFgGn%":
        value = float(value)
    return format(value, fmt)


# --- bibliography -----------------------------------------------------------------

_ACCENTS = {'"': "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303",
            "c": "\u0327", "v": "\u030c", "=": "\u0304", ".": "\u0307", "u": "\u0306",
            "H": "\u030b", "k": "\u0328"}
_LETTERS = {"i": "ı", "o": "ø", "O": "Ø", "ss": "ß", "ae": "æ", "AE": "Æ", "l": "ł", "L": "Ł",
            "aa": "å", "AA": "Å", "&": "&", "%": "%", "_": "_"}


def latex_to_text(s: str) -> str:
    """BibTeX field text → plain unicode (accents, ``{\\i}``, braces, ``--``)."""
    s = re.sub(r"\\([\"'`^~=.])\s*\{?\\?([A-Za-z])\}?",
               lambda m: m[2] + _ACCENTS[m[1]], s)
    s = re.sub(r"\\([cvuHk])\s*\{\\?([A-Za-z])\}|\\([cvuHk])\s+([A-Za-z])",
               lambda m: (m[2] or m[4]) + _ACCENTS[m[1] or m[3]], s)
    s = re.sub(r"\\(ss|ae|AE|aa|AA|[ioOlL&%_])(?![A-Za-z])",
               lambda m: _LETTERS[m[1]], s)
    s = s.replace("--", "–").replace("~", "\u00a0").replace("{", "").replace("}", "")
    return unicodedata.normalize("NFC", re.sub(r"\s+", " ", s).strip())


def parse_bibtex(text: str) -> dict[str, dict[str, str]]:
    """``{key: {field: plain text, "type": entry type}}`` of a .bib file."""
    entries = {}
    for m in re.finditer(r"@(\w+)\s*\{\s*([^,\s]+)\s*,", text):
        kind, key, i = m[1].lower(), m[2], m.end()
        if kind in ("comment", "string", "preamble"):
            continue
        fields: dict[str, str] = {"type": kind}
        while True:
            f = re.compile(r"\s*(\w+)\s*=\s*").match(text, i)
            if not f:
                break
            i = f.end()
            if text[i] in "{\"":
                close, depth, j = ("}" if text[i] == "{" else '"'), 0, i
                while j < len(text):
                    c = text[j]
                    if c == "{":
                        depth += 1
                    elif c == "}" and (close == "}" or depth > 0):
                        depth -= 1
                        if close == "}" and depth == 0:
                            break
                    elif c == '"' and close == '"' and depth == 0 and j > i:
                        break
                    j += 1
                value, i = text[i + 1:j], j + 1
            else:
                v = re.compile(r"[^,}\s]+").match(text, i)
                value, i = v[0], v.end()
            fields[f[1].lower()] = latex_to_text(value)
            c = re.compile(r"\s*,?").match(text, i)
            i = c.end()
        entries[key] = fields
    return entries


def _last_names(author: str) -> list[str]:
    names = []
    for person in re.split(r"\s+and\s+", author):
        person = person.strip()
        names.append(person.split(",")[0].strip() if "," in person else person.split()[-1])
    return names


def author_short(author: str) -> str:
    names = _last_names(author)
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} & {names[1]}"
    return f"{names[0]} et al."


def reference(e: dict[str, str]) -> str:
    """One reference-list line: authors (year). title. venue. note."""
    authors = []
    for person in re.split(r"\s+and\s+", e.get("author", "")):
        if "," in person:
            last, first = (p.strip() for p in person.split(",", 1))
            authors.append(f"{last}, {first}")
        elif person.strip():
            authors.append(person.strip())
    names = ", ".join(authors[:-1]) + (" & " if len(authors) > 1 else "") + authors[-1] \
        if authors else e.get("editor", "")
    venue = e.get("journal") or e.get("booktitle") or e.get("publisher") or e.get("school", "")
    extra = ", ".join(x for x in (f"vol. {e['volume']}" if "volume" in e else "",
                                  f"pp. {e['pages']}" if "pages" in e else "") if x)
    text = f"{names} ({e.get('year', 'n.d.')}). {e.get('title', '')}."
    if venue:
        text += f" *{venue}*" + (f", {extra}" if extra else "") + "."
    for key in ("note", "url", "doi"):
        if key in e:
            text += f" {e[key]}."
    return text


# --- the conversion ---------------------------------------------------------------

@dataclass
class Converter:
    """Converts one chapter's markdown cells (``chapter``: the page stem)."""
    index: BookIndex
    chapter: str
    root: Path
    glued: dict[str, str] | None = None
    cited: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.chapter}.md"

    def markdown(self, text: str) -> str:
        """One markdown cell's source, rendered."""
        out = []
        for part in parse_blocks(text):
            out.append(self._block(part) if isinstance(part, Block) else self._plain(part))
        return self.index.expand_macros(re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n"))

    def _plain(self, text: str) -> str:
        """Text outside directives: targets dropped, labelled $$ math tagged, roles resolved
        (not inside code spans or fences)."""
        text = TARGET.sub("", text)
        out = []
        for line in text.split("\n"):
            if d := DOLLAR_LABEL.match(line):  # "$$ (label)" closes a labelled equation
                out += [f"\\tag{{{self.index.equations[d['label']].strip('()')}}}", "$$"]
            else:
                out.append(line)
        return self._roles("\n".join(out))

    def _roles(self, text: str) -> str:
        """Resolve the roles outside fenced code and code spans."""
        pieces = re.split(r"(^```.*?^```[ \t]*$)", text, flags=re.M | re.S)
        for k in range(0, len(pieces), 2):  # outside fenced code
            pieces[k] = ROLE_OR_CODE.sub(
                lambda m: self._role(m) if m["name"] else m[0], pieces[k])
        return "".join(pieces)

    def _role(self, m: re.Match) -> str:
        if m["name"].startswith("cite"):
            self.cited += [k.strip() for k in m["content"].split(",")]
        return self.index.resolve(m["name"], m["content"], self.glued, self.where)

    def _block(self, b: Block) -> str:
        body = lambda: self.markdown(b.body)  # noqa: E731
        label = b.options.get("label") or b.options.get("name")
        if b.name == "math":
            math = b.body.strip()
            if "\\\\" in math and not math.lstrip().startswith("\\begin"):
                math = f"\\begin{{aligned}}{math}\\end{{aligned}}"
            tag = f"\n\\tag{{{self.index.equations[label].strip('()')}}}" if label else ""
            return f"$$\n{math}{tag}\n$$"
        if b.name == "prf:proof":
            return f"*Proof.* {body()} $\\blacksquare$"
        if b.name.startswith("prf:") and b.name[4:] in PRF_TYPES:
            head = self.index.numbered.get(label) if label else None
            head = head or PRF_TYPES[b.name[4:]]
            title = f" ({self._roles(b.arg)})" if b.arg else ""
            return f"**{head}{title}.** {body()}"
        if b.name in ("exercise", "exercise-start"):
            head = self.index.exercises.get(label, "Exercise")
            title = f": {self._roles(b.arg)}" if b.arg else ""
            return f"#### {head}{title}\n\n{body()}"
        if b.name in ("solution", "solution-start"):
            target = b.arg.strip()
            head = f"Solution to {self.index.exercises.get(target, 'the exercise')}"
            return f"#### {head}\n\n{body()}"
        if b.name in ("exercise-end", "solution-end"):
            return ""
        if b.name in ADMONITIONS or b.name == "admonition":
            title = ADMONITIONS.get(b.name) or self._roles(b.arg)
            quoted = "\n".join(f"> {ln}" if ln else ">" for ln in body().split("\n"))
            return f"> **{title}.**\n>\n{quoted}"
        if b.name == "dropdown":
            return f"**{self._roles(b.arg) or 'Details'}**\n\n{body()}"
        if b.name == "list-table":
            return self._list_table(b, label)
        if b.name == "literalinclude":
            return self._literalinclude(b)
        if b.name in ("code-block", "code", "sourcecode"):
            return f"```{b.arg}\n{b.body}\n```"
        if b.name in ("bibliography", "tableofcontents"):
            return ""
        raise MystError(f"{self.where}: unknown directive {{{b.name}}}; known: math, prf:*, "
                        "exercise(-start/-end), solution(-start/-end), admonitions, dropdown, "
                        "list-table, literalinclude, code-block")

    def _list_table(self, b: Block, label: str | None) -> str:
        rows: list[list[str]] = []
        for line in b.body.split("\n"):
            if re.match(r"^\*\s+-\s", line):
                rows.append([line.split("-", 1)[1].strip()])
            elif re.match(r"^\s+-\s", line) and rows:
                rows[-1].append(line.strip()[1:].strip())
            elif line.strip() and rows:  # continuation of the last cell
                rows[-1][-1] += " " + line.strip()
        if not rows:
            raise MystError(f"{self.where}: empty list-table {b.arg!r}")
        cells = [[self._roles(c).replace("|", "\\|") for c in row] for row in rows]
        header = int(b.options.get("header-rows", "0") or 0)
        width = max(len(r) for r in cells)
        cells = [r + [""] * (width - len(r)) for r in cells]
        head = cells[0] if header else [""] * width
        table = [f"| {' | '.join(head)} |", "|" + "---|" * width]
        table += [f"| {' | '.join(r)} |" for r in cells[1 if header else 0:]]
        caption = self.index.numbered.get(label, "Table") if label else "Table"
        title = f"**{caption}:** {self._roles(b.arg)}" if b.arg else f"**{caption}**"
        return title + "\n\n" + "\n".join(table)

    def _literalinclude(self, b: Block) -> str:
        path = (self.root / "book" / b.arg).resolve()
        if not path.is_file():
            raise MystError(f"{self.where}: literalinclude of a missing file {b.arg}")
        source = path.read_text()
        rel = path.relative_to(self.root.resolve()) if self.root.resolve() in path.parents \
            else path.name
        if "pyobject" in b.options:
            source = pyobject_source(source, b.options["pyobject"], f"{rel}")
            what = f"`{b.options['pyobject']}` in `{rel}`"
        else:
            what = f"`{rel}`"
        if "lines" in b.options:
            raise MystError(f"{self.where}: literalinclude :lines: is not supported")
        language = b.options.get("language", "python")
        return f"From {what}:\n\n```{language}\n{source.rstrip()}\n```"


def pyobject_source(source: str, dotted: str, where: str) -> str:
    """The source of a class, function or ``Class.method`` (with decorators), dedented."""
    tree: ast.AST = ast.parse(source)
    node = None
    for name in dotted.split("."):
        body = getattr(node if node is not None else tree, "body", [])
        node = next((n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef,
                                                       ast.AsyncFunctionDef))
                     and n.name == name), None)
        if node is None:
            raise MystError(f"{where}: no {dotted} to include")
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    lines = source.split("\n")[first - 1:node.end_lineno]
    return textwrap.dedent("\n".join(lines))
