"""Prompt templates: YAML data shipped in `personarag/prompts/`, one loader and one `fill`.

`read_yaml` reads every template file (reranker templates here, the LaMP and RAG
generation templates under `generation/`); `fill` replaces placeholders for all of them.

A reranker template has a `user` message (required), an optional `system` message, a `doc`
line format for each candidate, and for score-based modes the candidate `answers`.
Placeholders are `{name}`; only the names a reranker supplies are replaced, in one
pass over the template, so braces inside documents or inside the template's own
examples stay as they are.

Every shipped template writes the query on a line `Query: ...` and each candidate on
its own line `[LABEL] text` (pointwise: `Document: text`), with the candidate's
whitespace collapsed. Those stable markers make prompts easy to read and let the
test oracle (the `oracle` module of the test doubles) parse them.

A `prompt` parameter of a reranker takes a shipped template name (`listwise`), a
path to a YAML file with the same keys, a template string (the `user` message; it
must contain `{` placeholders), or a `PromptTemplate`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from personarag.errors import InputError
from personarag.llm.base import Message
from personarag.types import Document

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
DEFAULT_DOC_FORMAT = "[{label}] {text}"


def doc_text(doc: Document) -> str:
    """The text a reranker shows for a document: title and body, whitespace collapsed to single spaces."""
    return " ".join(doc.full_text.split())


def placeholders(template: str) -> list[str]:
    """The `{name}` placeholders of a template, in order."""
    return _PLACEHOLDER.findall(template)


def fill(template: str, values: Mapping[str, Any]) -> str:
    """Replace the `{name}` placeholders whose name is in `values`; leave every other brace alone."""
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    user: str
    system: str | None = None
    doc: str = DEFAULT_DOC_FORMAT
    answers: tuple[str, ...] = ()
    description: str = ""

    def placeholders(self) -> set[str]:
        found = set(placeholders(self.user))
        if self.system:
            found |= set(placeholders(self.system))
        return found

    def render_docs(self, items: Iterable[tuple[str, str]]) -> str:
        """`(label, text)` pairs as one block, one `doc` line each."""
        return "\n".join(fill(self.doc, {"label": label, "text": text}) for label, text in items)

    def render(self, **values: Any) -> tuple[Message, ...]:
        messages = []
        if self.system:
            messages.append(Message("system", fill(self.system, values)))
        messages.append(Message("user", fill(self.user, values)))
        return tuple(messages)

    def check(self, required: Sequence[str], where: str) -> PromptTemplate:
        missing = [name for name in required if name not in self.placeholders()]
        if missing:
            raise InputError(
                f"prompt template {self.name!r} ({where}) lacks the placeholder(s) "
                + ", ".join("{" + m + "}" for m in missing)
                + f"; it uses {sorted(self.placeholders())}"
            )
        return self


def shipped_prompts() -> list[str]:
    folder = files("personarag") / "prompts"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _from_mapping(data: Any, name: str, source: str) -> PromptTemplate:
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: a prompt template must be a YAML mapping, got {type(data).__name__}")
    unknown = set(data) - {"name", "description", "system", "user", "doc", "answers"}
    if unknown:
        raise InputError(f"{source}: unknown template keys {sorted(unknown)}; allowed: name, description, system, user, doc, answers")
    if not isinstance(data.get("user"), str) or not data["user"].strip():
        raise InputError(f"{source}: the template needs a non-empty 'user' message")
    answers = data.get("answers") or ()
    if not isinstance(answers, (list, tuple)) or not all(isinstance(a, str) and a for a in answers):
        raise InputError(
            f"{source}: 'answers' must be a list of non-empty strings, got {answers!r} "
            "(quote yes/no in YAML: unquoted they are read as booleans)"
        )
    return PromptTemplate(
        name=str(data.get("name") or name),
        user=data["user"],
        system=data.get("system") or None,
        doc=data.get("doc") or DEFAULT_DOC_FORMAT,
        answers=tuple(answers),
        description=str(data.get("description") or ""),
    )


def shipped_file(name: str) -> Path:
    """The path of a shipped template file, e.g. `generation/rag.yaml`."""
    return Path(str(files("personarag") / "prompts" / name))


def read_yaml(path: str | Path, what: str) -> Any:
    """The YAML content of a template file; an InputError naming the file and `what` it should hold."""
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise InputError(f"{path}: cannot read the {what}: {error}") from error


def _read_yaml(path: Path, name: str) -> PromptTemplate:
    return _from_mapping(read_yaml(path, "prompt template"), name, str(path))


def load_prompt(prompt: str | PromptTemplate | Mapping[str, Any] | None, default: str, required: Sequence[str] = ()) -> PromptTemplate:
    """Resolve a reranker's `prompt` parameter (None: the shipped `default`) and check its placeholders."""
    if prompt is None:
        prompt = default
    if isinstance(prompt, PromptTemplate):
        return prompt.check(required, "given object")
    if isinstance(prompt, Mapping):
        return _from_mapping(prompt, "custom", "prompt mapping").check(required, "prompt mapping")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"prompt must be a template name, a YAML path or a template string, got {prompt!r}")
    shipped = files("personarag") / "prompts" / f"{prompt}.yaml"
    if "\n" not in prompt and "{" not in prompt:
        if shipped.is_file():
            return _read_yaml(Path(str(shipped)), prompt).check(required, f"shipped {prompt}.yaml")
        path = Path(prompt).expanduser()
        if path.is_file():
            return _read_yaml(path, path.stem).check(required, str(path))
        raise InputError(
            f"prompt {prompt!r} is neither a shipped template ({', '.join(shipped_prompts())}), "
            "an existing YAML file, nor a template string with {placeholders}"
        )
    return PromptTemplate(name="custom", user=prompt).check(required, "template string")
