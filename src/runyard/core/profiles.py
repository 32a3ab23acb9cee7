"""Platform profiles: what each kind of compute does on stop and destroy, and what it costs.

One YAML file per platform (local, generic-ssh, vast, runpod, lambda, slurm, kubernetes,
kaggle) with the schema of seeds/remote-gpu-trainer-profile-generic-ssh.md's front matter,
plus the structured facts the teardown gate and the console need: a storage survival
matrix, the teardown verbs, whether a stopped box bills storage, and the danger clocks.

Where they live: the shipped defaults are package data in `runyard/profiles_default/` (the one
source of truth, so an installed runyard finds them); the repository's top-level `profiles/`
holds symlinks to them. A file in a workspace's `profiles/` overrides the shipped one of the
same name as a whole (no merging: what you read in the file is what runyard uses).

A malformed profile raises `FileFormatError` naming the file, the line and the field; an
unknown key is a warning on the loaded profile, so a newer file still loads in an older runyard.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from runyard.core.errors import FileFormatError, InputError

HOST_DEPENDENT = "host-dependent"
PROFILE_SUFFIX = ".yaml"
SHIPPED_DIR = "profiles_default"
PLATFORM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

# A platform fact: true/false, or text such as "host-dependent" or "n/a" when it is not a yes/no.
Fact = bool | str
Origin = Literal["workspace", "shipped"]


class Kind(StrEnum):
    """How runyard reaches the compute."""

    LOCAL = "local"
    SSH = "ssh"
    SLURM = "slurm"
    KUBERNETES = "kubernetes"
    NOTEBOOK = "notebook"


class Detach(StrEnum):
    """What keeps a run alive after the connection that started it goes away."""

    SETSID = "setsid"
    TMUX = "tmux"
    NOHUP = "nohup"
    SBATCH = "sbatch"
    K8S_JOB = "k8s-job"
    KAGGLE_COMMIT = "kaggle-commit"


class Effect(StrEnum):
    """Which column of the survival matrix a teardown verb applies."""

    STOP = "stop"
    DESTROY = "destroy"


@dataclass(frozen=True)
class StorageTier:
    """One row of the survival matrix. `None` means host-dependent: treat it as lost."""

    name: str
    path: str
    survives_stop: bool | None
    survives_destroy: bool | None
    note: str = ""

    def survives(self, effect: Effect) -> bool | None:
        """Whether data on this tier outlives a verb with `effect` (None: host-dependent)."""
        return self.survives_stop if effect is Effect.STOP else self.survives_destroy


@dataclass(frozen=True)
class TeardownVerb:
    """An action that stops (some of) the meter, and what it keeps billing afterwards."""

    verb: str
    effect: Effect
    reversible: bool
    note: str
    still_bills: str


@dataclass(frozen=True)
class DangerClock:
    """A silent timer or meter to warn about; `after` names the verbs that start it."""

    name: str
    message: str
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlatformProfile:
    """A validated platform profile, with where it came from and any warnings."""

    platform: str
    kind: Kind
    summary: str
    meter_stop_verb: str
    meter_stop_irreversible: bool
    detach_primitive: Detach
    spot_available: Fact
    spot_grace: Fact
    shared_fs: Fact
    inode_cap: Fact
    free_egress: Fact
    china_mirror_needed: Fact
    host_driver_cuda_max: Fact
    local_nvme: Fact
    stop_bills_storage: bool
    storage: tuple[StorageTier, ...]
    teardown_verbs: tuple[TeardownVerb, ...]
    danger_clocks: tuple[DangerClock, ...]
    source: str
    origin: Origin
    warnings: tuple[str, ...] = ()

    def verb(self, action: str) -> TeardownVerb | None:
        """The teardown verb named `action`; "stop"/"destroy" also match the one verb with
        that effect, so a console can ask for "destroy" on RunPod and get `terminate`."""
        for verb in self.teardown_verbs:
            if verb.verb == action:
                return verb
        by_effect = [v for v in self.teardown_verbs if v.effect.value == action]
        return by_effect[0] if len(by_effect) == 1 else None

    def clocks_after(self, verb: str) -> list[DangerClock]:
        """The danger clocks that start ticking when `verb` runs."""
        return [clock for clock in self.danger_clocks if verb in clock.after]

    def standing_clocks(self) -> list[DangerClock]:
        """The danger clocks that tick while the compute simply exists (shown up front)."""
        return [clock for clock in self.danger_clocks if not clock.after]


# ---------------------------------------------------------------- parsing with line numbers

_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)

_FIELDS = (
    "platform", "kind", "summary", "meter_stop_verb", "meter_stop_irreversible",
    "detach_primitive", "spot_available", "spot_grace", "shared_fs", "inode_cap",
    "free_egress", "china_mirror_needed", "host_driver_cuda_max", "local_nvme",
    "stop_bills_storage", "storage", "teardown_verbs", "danger_clocks",
)  # fmt: skip
_TIER_FIELDS = ("name", "path", "survives_stop", "survives_destroy", "note")
_VERB_FIELDS = ("verb", "effect", "reversible", "note", "still_bills")
_CLOCK_FIELDS = ("name", "message", "after")

Key = str | int  # a mapping key, or an index into a list


class _Node:
    """One mapping or list of a round-trip-loaded document, with its dotted field path.

    Every typed read names the file, the 1-based line and the field when it fails; unknown
    keys are collected in the shared `warnings` list.
    """

    def __init__(self, source: str, value: Any, field: str, warnings: list[str]) -> None:
        self.source = source
        self.value = value
        self.field = field
        self.warnings = warnings

    def path(self, key: Key) -> str:
        return f"{self.field}.{key}" if self.field else str(key)

    def get(self, key: Key) -> Any:
        """The raw value at `key`, None when absent (or null)."""
        if isinstance(self.value, CommentedSeq) and isinstance(key, int):
            return self.value[key] if 0 <= key < len(self.value) else None
        return self.value.get(key) if isinstance(self.value, CommentedMap) else None

    def line(self, key: Key | None = None) -> int | None:
        """The 1-based line of `key` (of this node when key is None or absent)."""
        lc = getattr(self.value, "lc", None)
        if lc is None:
            return None
        try:
            if isinstance(self.value, CommentedSeq) and isinstance(key, int):
                return int(lc.item(key)[0]) + 1
            if isinstance(self.value, CommentedMap) and key in self.value:
                return int(lc.key(key)[0]) + 1
        except (KeyError, IndexError, TypeError):
            pass
        return int(lc.line) + 1

    def error(self, key: Key | None, message: str) -> FileFormatError:
        field = self.path(key) if key is not None else self.field or "(document)"
        return FileFormatError(self.source, message, line=self.line(key), field=field)

    def required(self, key: Key) -> Any:
        value = self.get(key)
        if value is None:
            raise self.error(key, "is required")
        return value

    def at(self, key: Key) -> _Node:
        """The node at `key`, sharing this document's source and warnings."""
        return _Node(self.source, self.get(key), self.path(key), self.warnings)

    def child(self, key: Key, known: tuple[str, ...]) -> _Node:
        """The mapping at `key` (required); its keys outside `known` become warnings."""
        self.required(key)
        return self.at(key).as_mapping(known)

    def as_mapping(self, known: tuple[str, ...]) -> _Node:
        if not isinstance(self.value, CommentedMap):
            raise FileFormatError(
                self.source,
                f"must be a mapping of fields, not {_describe(self.value)}",
                line=self.line(),
                field=self.field or "(document)",
            )
        for name in self.value:
            if name not in known:
                self.warnings.append(
                    f"{self.source}:{self.line(name)}: unknown field '{self.path(name)}' ignored"
                )
        return self

    def text(self, key: Key, *, optional: bool = False) -> str:
        """A non-empty one-line string ("" when optional and absent); numbers become text."""
        if optional and self.get(key) is None:
            return ""
        value = self.required(key)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(key, f"must be text, not {_describe(value)}")
        result = str(value).strip()
        if not result:
            raise self.error(key, "must not be empty")
        if "\n" in result:
            raise self.error(key, "must be one line")
        return result

    def flag(self, key: Key) -> bool:
        value = self.required(key)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {_describe(value)}")
        return value

    def fact(self, key: Key) -> Fact:
        """true/false, or a short text such as "host-dependent"."""
        value = self.required(key)
        return value if isinstance(value, bool) else self.text(key)

    def survival(self, key: Key) -> bool | None:
        """true/false, or None for "host-dependent"."""
        value = self.required(key)
        if isinstance(value, bool):
            return value
        if value == HOST_DEPENDENT:
            return None
        raise self.error(key, f"must be true, false or {HOST_DEPENDENT}, not {_describe(value)}")

    def choice(self, key: Key, enum: type[_E]) -> _E:
        value = self.text(key)
        try:
            return enum(value)
        except ValueError:
            allowed = " | ".join(member.value for member in enum)
            raise self.error(key, f"must be one of {allowed}, not '{value}'") from None

    def items(self, key: Key, parse: Callable[[_Node, int], _T]) -> tuple[_T, ...]:
        """The list at `key`, each item parsed by `parse(list_node, index)`."""
        value = self.required(key)
        if not isinstance(value, CommentedSeq):
            raise self.error(key, f"must be a list, not {_describe(value)}")
        return tuple(parse(self.at(key), i) for i in range(len(value)))

    def unique(self, names: list[str], what: str) -> None:
        """Fail on the first repeated name in this list (names[i] belongs to item i)."""
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                raise self.error(i, f"repeats the {what} '{name}'")
            seen.add(name)


def _describe(value: Any) -> str:
    if isinstance(value, CommentedMap):
        return "a mapping"
    if isinstance(value, CommentedSeq):
        return "a list"
    return repr(value) if isinstance(value, (str, bool, int, float)) else type(value).__name__


def _tier(seq: _Node, i: int) -> StorageTier:
    m = seq.child(i, _TIER_FIELDS)
    return StorageTier(
        name=m.text("name"),
        path=m.text("path"),
        survives_stop=m.survival("survives_stop"),
        survives_destroy=m.survival("survives_destroy"),
        note=m.text("note", optional=True),
    )


def _verb(seq: _Node, i: int) -> TeardownVerb:
    m = seq.child(i, _VERB_FIELDS)
    return TeardownVerb(
        verb=m.text("verb"),
        effect=m.choice("effect", Effect),
        reversible=m.flag("reversible"),
        note=m.text("note"),
        still_bills=m.text("still_bills"),
    )


def _clock(seq: _Node, i: int, verbs: set[str]) -> DangerClock:
    m = seq.child(i, _CLOCK_FIELDS)
    after: tuple[str, ...] = ()
    if m.get("after") is not None:
        after = m.items("after", lambda s, j: s.text(j))
        for j, verb in enumerate(after):
            if verb not in verbs:
                raise m.at("after").error(j, f"names '{verb}', which is not in teardown_verbs")
    return DangerClock(name=m.text("name"), message=m.text("message"), after=after)


def _load_yaml(text: str, source: str) -> Any:
    """The round-trip document (keeps line numbers); a syntax error names its line."""
    try:
        doc = YAML(typ="rt", pure=True).load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = mark.line + 1 if mark is not None else None
        raise FileFormatError(source, f"not valid YAML: {problem}", line=line) from None
    if doc is None:
        raise FileFormatError(source, "is empty; expected a mapping of profile fields", line=1)
    return doc


def parse_profile(
    text: str, source: str | Path, *, origin: Origin = "workspace", platform: str | None = None
) -> PlatformProfile:
    """Validate a profile's YAML text; `platform`, when given, must match its `platform:`.

    Raises `FileFormatError` (file, 1-based line, field) on the first problem; unknown keys
    become `PlatformProfile.warnings`.
    """
    warnings: list[str] = []
    doc = _Node(str(source), _load_yaml(text, str(source)), "", warnings).as_mapping(_FIELDS)
    name = doc.text("platform")
    if platform is not None and name != platform:
        raise doc.error("platform", f"says '{name}' but the file is the '{platform}' profile")
    storage = doc.items("storage", _tier)
    if not storage:
        raise doc.error("storage", "must list at least one storage tier")
    verbs = doc.items("teardown_verbs", _verb)
    declared = {v.verb for v in verbs}
    clocks = doc.items("danger_clocks", lambda seq, i: _clock(seq, i, declared))
    for key, names, what in (
        ("storage", [t.name for t in storage], "storage tier"),
        ("teardown_verbs", [v.verb for v in verbs], "verb"),
        ("danger_clocks", [c.name for c in clocks], "danger clock"),
    ):
        doc.at(key).unique(names, what)

    return PlatformProfile(
        platform=name,
        kind=doc.choice("kind", Kind),
        summary=doc.text("summary"),
        meter_stop_verb=doc.text("meter_stop_verb"),
        meter_stop_irreversible=doc.flag("meter_stop_irreversible"),
        detach_primitive=doc.choice("detach_primitive", Detach),
        spot_available=doc.fact("spot_available"),
        spot_grace=doc.fact("spot_grace"),
        shared_fs=doc.fact("shared_fs"),
        inode_cap=doc.fact("inode_cap"),
        free_egress=doc.fact("free_egress"),
        china_mirror_needed=doc.fact("china_mirror_needed"),
        host_driver_cuda_max=doc.fact("host_driver_cuda_max"),
        local_nvme=doc.fact("local_nvme"),
        stop_bills_storage=doc.flag("stop_bills_storage"),
        storage=storage,
        teardown_verbs=verbs,
        danger_clocks=clocks,
        source=doc.source,
        origin=origin,
        warnings=tuple(warnings),
    )


# ---------------------------------------------------------------- finding and loading


def _shipped_dir() -> Traversable:
    return resources.files("runyard").joinpath(SHIPPED_DIR)


def _check_name(platform: str) -> None:
    if not PLATFORM_NAME.fullmatch(platform):
        raise InputError(
            f"'{platform}' is not a platform name (lower-case letters, digits, '-' and '_')"
        )


def _names_in(entries: Iterable[Traversable]) -> set[str]:
    """The platform names of the `<name>.yaml` files among `entries`."""
    names: set[str] = set()
    for entry in entries:
        name = entry.name.removesuffix(PROFILE_SUFFIX)
        if name != entry.name and PLATFORM_NAME.fullmatch(name) and entry.is_file():
            names.add(name)
    return names


def list_profiles(workspace_profiles_dir: Path | None = None) -> list[str]:
    """Every platform with a profile: the shipped ones and the workspace's own, sorted."""
    names = _names_in(_shipped_dir().iterdir())
    if workspace_profiles_dir is not None and workspace_profiles_dir.is_dir():
        names |= _names_in(workspace_profiles_dir.iterdir())
    return sorted(names)


def shipped_profile_text(platform: str) -> str:
    """The shipped default's YAML text (comments included), e.g. for `runyard init` to copy."""
    _check_name(platform)
    entry = _shipped_dir().joinpath(platform + PROFILE_SUFFIX)
    if not entry.is_file():
        raise InputError(
            f"no shipped profile for platform '{platform}' (shipped: {', '.join(list_profiles())})"
        )
    return entry.read_text(encoding="utf-8")


def _is_shipped_file(path: Path, shipped: Traversable) -> bool:
    """True when `path` is the shipped file itself (the repo's profiles/ symlinks to them)."""
    return isinstance(shipped, Path) and path.resolve() == shipped.resolve()


def load_profile(workspace_profiles_dir: Path | None, platform: str) -> PlatformProfile:
    """The profile for `platform`: the workspace's `profiles/<platform>.yaml` when it exists,
    else the shipped default. Raises `InputError` for an unknown platform and
    `FileFormatError` for a malformed file."""
    _check_name(platform)
    shipped = _shipped_dir().joinpath(platform + PROFILE_SUFFIX)
    if workspace_profiles_dir is not None:
        candidate = workspace_profiles_dir / (platform + PROFILE_SUFFIX)
        if candidate.is_file():
            try:
                text = candidate.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise FileFormatError(candidate, f"cannot be read: {exc}") from None
            origin: Origin = "shipped" if _is_shipped_file(candidate, shipped) else "workspace"
            return parse_profile(text, candidate, origin=origin, platform=platform)
    if not shipped.is_file():
        known = ", ".join(list_profiles(workspace_profiles_dir))
        raise InputError(f"no profile for platform '{platform}' (known: {known})")
    return parse_profile(
        shipped.read_text(encoding="utf-8"), str(shipped), origin="shipped", platform=platform
    )


# ---------------------------------------------------------------- teardown consequences


def teardown_consequences(profile: PlatformProfile, action: str) -> list[str]:
    """The human lines of what `action` (a teardown verb, or "stop"/"destroy") loses, keeps
    and still bills on this platform, for the teardown modal and destroy prompts.

    Raises `InputError` when the platform has no such verb.
    """
    verb = profile.verb(action)
    if verb is None:
        have = ", ".join(v.verb for v in profile.teardown_verbs) or "none: nothing to tear down"
        raise InputError(f"{profile.platform} has no teardown verb '{action}' (it has {have})")
    undo = "It can be undone later." if verb.reversible else "It cannot be undone."
    lines = [f"{profile.platform} {verb.verb}: {verb.note}. {undo}"]
    at_risk = False
    for tier in profile.storage:
        where = f"(path {HOST_DEPENDENT})" if tier.path == HOST_DEPENDENT else f"at {tier.path}"
        note = f" ({tier.note})" if tier.note else ""
        survives = tier.survives(verb.effect)
        at_risk = at_risk or survives is not True
        if survives is True:
            lines.append(f"KEPT: {tier.name} {where}{note}.")
        elif survives is False:
            gone = "deleted" if verb.effect is Effect.DESTROY else "wiped"
            lines.append(f"LOST: {tier.name} {where} is {gone}{note}.")
        else:
            lines.append(
                f"AT RISK: {tier.name} {where} may not survive ({HOST_DEPENDENT}){note}; "
                f"verify before you {verb.verb}."
            )
    lines.append(f"STILL BILLS after {verb.verb}: {verb.still_bills}.")
    if at_risk:
        lines.append(
            "Pull results to local and verify them first: anything left only there is gone."
        )
    lines.extend(f"DANGER: {clock.message}" for clock in profile.clocks_after(verb.verb))
    return lines
