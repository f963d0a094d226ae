"""The README's examples, as a user would type them: the ```bash blocks' command lines and the ```python blocks,
in README order (shared by test_readme.py, which parses them, and test_readme_walk.py, which runs them)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_PATH = ROOT / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_HEREDOC = re.compile(r"<<'(\w+)'\s*$")


@dataclass(frozen=True)
class Example:
    """One runnable example. kind "shell": one command line of a bash block (continuations joined, the trailing
    `# comment` dropped, `a && b` split into two examples; a pipe stays in the line; a heredoc's body follows
    the line after a newline, as bash reads it). kind "python": a ```python block's source."""
    kind: str
    text: str
    line: int  # the README line where it starts

    @property
    def label(self) -> str:
        first = self.text.splitlines()[0] if self.kind == "shell" else "python block"
        return f"L{self.line}: {first}"


def _strip_comment(line: str) -> str:
    return "" if line.lstrip().startswith("#") else line.split(" #")[0].strip()


def _bash_examples(block: str, first_line: int) -> list[Example]:
    examples: list[Example] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        start = i
        logical = lines[i]
        while logical.endswith("\\") and i + 1 < len(lines):  # a continuation line
            i += 1
            logical = logical[:-1] + " " + lines[i].strip()
        i += 1
        command = _strip_comment(logical)
        if not command:
            continue
        heredoc = _HEREDOC.search(command)
        if heredoc:  # python3 - <<'PY' ... PY: the body, up to the closing tag, goes with the command
            end = lines.index(heredoc.group(1), i)
            command = "\n".join([command, *lines[i:end], heredoc.group(1)])
            i = end + 1
        for part in re.split(r"\s&&\s", command) if not heredoc else [command]:
            examples.append(Example("shell", part.strip(), first_line + start))
    return examples


def readme_examples(text: str | None = None) -> list[Example]:
    """Every example of the README (or of `text`), in order."""
    text = README_PATH.read_text(encoding="utf-8") if text is None else text
    examples: list[Example] = []
    for match in _FENCE.finditer(text):
        lang, body = match.group(1), match.group(2)
        first_line = text.count("\n", 0, match.start(2)) + 1
        if lang == "bash":
            examples += _bash_examples(body, first_line)
        elif lang == "python":
            examples.append(Example("python", body, first_line))
    return examples


def bash_commands(text: str) -> list[str]:
    """The simple commands of the ```bash blocks: `a | b` split too, heredoc bodies dropped."""
    commands = []
    for example in readme_examples(text):
        if example.kind == "shell":
            commands += [part.strip() for part in re.split(r"\s\|\s", example.text.splitlines()[0]) if part.strip()]
    return commands
