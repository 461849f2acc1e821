"""Load firmware profiles from YAML into frozen models, with errors that name the file and key path."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from firmware_profiles.schema import FirmwareProfile

DEFAULT_PROFILE_DIR = Path(__file__).resolve().parent
# 256 KiB: a profile is a page of YAML; a bigger file is a mistake or an attack on the parser.
MAX_PROFILE_BYTES = 256 * 1024
# 1 MiB reads keep hashing a multi-GiB image at constant memory.
HASH_CHUNK_BYTES = 1024 * 1024

_YAML_TAG_PREFIX = "tag:yaml.org,2002:"
# A key names a file in the profiles folder; anything path-like is refused before touching the disk.
_SAFE_KEY = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")


@dataclass(frozen=True, slots=True)
class ProfileIssue:
    """One problem in one profile file: `file: path: message`."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}" if self.path else f"{self.file}: {self.message}"


class ProfileError(Exception):
    """One or more profiles are invalid; `issues` lists every problem found."""

    def __init__(self, issues: list[ProfileIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = tuple(issues)


def _format_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


class _PathTracker:
    """Follows YAML parse events to know the key path of the node being parsed."""

    def __init__(self) -> None:
        # Each frame: ["map", expecting_key, current_key] or ["seq", index]
        self.stack: list[list[Any]] = []

    def path_for_next_node(self) -> str:
        parts: list[Any] = []
        for frame in self.stack:
            if frame[0] == "map":
                if frame[2] is not None:
                    parts.append(frame[2])
            else:
                parts.append(frame[1])
        return _format_path(tuple(parts))

    def node_started(self, event: yaml.Event) -> None:
        """Advance the parent's position for a node that begins (a key, a value or an item)."""
        if not self.stack:
            return
        frame = self.stack[-1]
        if frame[0] == "seq":
            frame[1] += 1
        elif frame[1]:  # this node is a key
            frame[2] = getattr(event, "value", "?") if isinstance(event, yaml.ScalarEvent) else "?"

    def node_finished(self) -> None:
        if not self.stack:
            return
        frame = self.stack[-1]
        if frame[0] == "map":
            frame[1] = not frame[1]


def _line(event: yaml.Event) -> int | str:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else "?"


def _check_plain_yaml(text: str) -> list[tuple[str, str]]:
    """Refuse anything but plain data: explicit tags, anchors/aliases, several documents."""
    problems: list[tuple[str, str]] = []
    tracker = _PathTracker()
    documents = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                problems.append(("", f"line {_line(event)}: only one YAML document is allowed"))
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            tracker.stack.pop()
            tracker.node_finished()
            continue
        if not isinstance(
            event, (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.AliasEvent)
        ):
            continue
        is_key = bool(tracker.stack) and tracker.stack[-1][0] == "map" and tracker.stack[-1][1]
        tracker.node_started(event)
        where = tracker.path_for_next_node()
        line = _line(event)
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!":
            shown = "!!" + tag[len(_YAML_TAG_PREFIX) :] if tag.startswith(_YAML_TAG_PREFIX) else tag
            problems.append(
                (where, f"line {line}: YAML tag {shown} is not allowed (profiles are plain data)")
            )
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            problems.append((where, f"line {line}: YAML anchors and aliases are not allowed"))
        if is_key and not isinstance(event, yaml.ScalarEvent):
            problems.append((where, f"line {line}: keys must be plain strings"))
        if isinstance(event, yaml.MappingStartEvent):
            tracker.stack.append(["map", True, None])
        elif isinstance(event, yaml.SequenceStartEvent):
            tracker.stack.append(["seq", -1])
        else:
            tracker.node_finished()
    return problems


def parse_profile(text: str, file: str, *, expected_model: str | None = None) -> FirmwareProfile:
    """Validate one profile's YAML text; `file` is the name used in error messages."""
    try:
        problems = _check_plain_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ProfileError(
            [ProfileIssue(file, "", f"{where}invalid YAML: {getattr(err, 'problem', err)}")]
        ) from err
    if problems:
        raise ProfileError([ProfileIssue(file, p, m) for p, m in problems])
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ProfileError([ProfileIssue(file, "", "a profile must be a mapping of keys to values")])
    non_str = [k for k in data if not isinstance(k, str)]
    if non_str:
        raise ProfileError([ProfileIssue(file, str(non_str[0]), "keys must be strings")])
    try:
        profile = FirmwareProfile.model_validate(data)
    except ValidationError as err:
        raise ProfileError(
            [ProfileIssue(file, _format_path(tuple(e["loc"])), _message(e)) for e in err.errors()]
        ) from err
    if expected_model is not None and profile.model != expected_model:
        raise ProfileError(
            [
                ProfileIssue(
                    file, "model", f"{profile.model!r} does not match the file name ({expected_model}.yaml)"
                )
            ]
        )
    return profile


def load_profile(path: str | Path, *, verify_artifacts: bool = False) -> FirmwareProfile:
    """Load and validate one profile file; its `model` must equal the file's stem."""
    p = Path(path)
    name = p.name
    try:
        size = p.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ProfileError(
                [ProfileIssue(name, "", f"file is {size} bytes, over the {MAX_PROFILE_BYTES} limit")]
            )
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ProfileError([ProfileIssue(name, "", "not UTF-8 text")]) from err
    except OSError as err:
        raise ProfileError([ProfileIssue(name, "", f"cannot read: {err.strerror or err}")]) from err
    profile = parse_profile(text, name, expected_model=p.stem)
    if verify_artifacts:
        issues = artifact_issues(profile, p.parent, name)
        if issues:
            raise ProfileError(issues)
    return profile


def load_profile_key(
    key: str, directory: str | Path = DEFAULT_PROFILE_DIR, *, verify_artifacts: bool = False
) -> FirmwareProfile:
    """The profile of a model key (a device model's `profile_key`, e.g. terminal-lt100) from the folder."""
    if not _SAFE_KEY.match(key):
        raise ProfileError([ProfileIssue(f"{key}.yaml", "", "not a profile key")])
    path = Path(directory) / f"{key}.yaml"
    if not path.is_file():
        raise ProfileError([ProfileIssue(path.name, "", f"no such profile in {directory}")])
    return load_profile(path, verify_artifacts=verify_artifacts)


def artifact_path(profile_dir: str | Path, artifact: str) -> Path:
    """Where a version's artifact lives: relative to the profiles folder, never outside it."""
    root = Path(profile_dir).resolve()
    candidate = (root / artifact).resolve()
    if not candidate.is_relative_to(root):
        raise ValueError(f"artifact {artifact} is outside {root}")
    return candidate


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_issues(profile: FirmwareProfile, profile_dir: str | Path, file: str) -> list[ProfileIssue]:
    """Each version's artifact must exist with the declared size and sha256."""
    issues: list[ProfileIssue] = []
    for i, v in enumerate(profile.versions):
        where = f"versions[{i}]"
        try:
            path = artifact_path(profile_dir, v.artifact)
        except ValueError:
            issues.append(ProfileIssue(file, f"{where}.artifact", "points outside the profiles folder"))
            continue
        if not path.is_file():
            issues.append(ProfileIssue(file, f"{where}.artifact", f"file not found: {v.artifact}"))
            continue
        actual = path.stat().st_size
        if actual != v.size:
            issues.append(
                ProfileIssue(file, f"{where}.size", f"{v.size} but {v.artifact} has {actual} bytes")
            )
            continue
        if _sha256_of(path) != v.sha256:
            issues.append(
                ProfileIssue(file, f"{where}.sha256", f"does not match the content of {v.artifact}")
            )
    return issues


def _profile_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.yaml") if p.is_file())


def load_all(
    directory: str | Path = DEFAULT_PROFILE_DIR, *, verify_artifacts: bool = False
) -> dict[str, FirmwareProfile]:
    """Every `*.yaml` profile in the folder by model key; raises ProfileError listing all problems."""
    directory = Path(directory)
    profiles: dict[str, FirmwareProfile] = {}
    issues: list[ProfileIssue] = []
    files = _profile_files(directory)
    if not files:
        raise ProfileError([ProfileIssue(str(directory), "", "no *.yaml profiles found")])
    for path in files:
        try:
            profiles[path.stem] = load_profile(path, verify_artifacts=verify_artifacts)
        except ProfileError as err:
            issues.extend(err.issues)
    if issues:
        raise ProfileError(issues)
    return profiles


def check_all(directory: str | Path = DEFAULT_PROFILE_DIR) -> list[str]:
    """Every problem in every profile in the folder, artifacts included; empty when all are good."""
    try:
        load_all(directory, verify_artifacts=True)
    except ProfileError as err:
        return [str(i) for i in err.issues]
    return []


def check_profiles_command(path: str | Path | None = None) -> tuple[bool, list[str]]:
    """What `labfleet profiles check [PATH]` prints: a folder or one file; (ok, lines)."""
    target = Path(path) if path is not None else DEFAULT_PROFILE_DIR
    if target.is_file():
        try:
            profile = load_profile(target, verify_artifacts=True)
        except ProfileError as err:
            return False, [str(i) for i in err.issues]
        return True, [_summary(target.name, profile)]
    if not target.is_dir():
        return False, [f"{target}: no such file or folder"]
    errors = check_all(target)
    if errors:
        return False, errors + [f"{len(errors)} problem(s) in {target}"]
    profiles = load_all(target)
    lines = [_summary(f"{key}.yaml", p) for key, p in sorted(profiles.items())]
    return True, lines + [f"{len(profiles)} profile(s) OK"]


def _summary(file: str, profile: FirmwareProfile) -> str:
    return (
        f"{file}: OK ({profile.kind}, {profile.transport}, driver {profile.driver}, "
        f"{len(profile.versions)} version(s), target {profile.target_version})"
    )
