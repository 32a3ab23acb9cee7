"""Platform profiles: the shipped ones validate, errors name file/line/field, overrides win."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.core.errors import FileFormatError, InputError
from runyard.core.profiles import (
    Effect,
    Kind,
    list_profiles,
    load_profile,
    parse_profile,
    shipped_profile_text,
    teardown_consequences,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {
    "local", "generic-ssh", "vast", "runpod", "lambda", "slurm", "kubernetes", "kaggle",
}  # fmt: skip


def line_of(text: str, needle: str) -> int:
    """The 1-based number of the only line of `text` that contains `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


@pytest.mark.parametrize("platform", sorted(SHIPPED))
def test_every_shipped_profile_loads_and_validates(platform: str) -> None:
    profile = load_profile(None, platform)
    assert profile.platform == platform
    assert profile.origin == "shipped"
    assert profile.warnings == ()
    assert profile.summary and "\n" not in profile.summary
    assert profile.storage
    for verb in profile.teardown_verbs:
        lines = teardown_consequences(profile, verb.verb)
        assert lines[0].startswith(f"{platform} {verb.verb}:")
        assert any(line.startswith("STILL BILLS") for line in lines)


def test_list_profiles_and_repo_profiles_are_the_shipped_files() -> None:
    assert set(list_profiles()) == SHIPPED
    repo_profiles = REPO / "profiles"
    assert set(list_profiles(repo_profiles)) == SHIPPED
    for platform in SHIPPED:
        # One source of truth: the repository's profiles/ are the package's files.
        repo_file = repo_profiles / f"{platform}.yaml"
        assert repo_file.read_text(encoding="utf-8") == shipped_profile_text(platform)
        assert load_profile(repo_profiles, platform).origin == "shipped"


def test_platform_facts_the_console_relies_on() -> None:
    vast = load_profile(None, "vast")
    assert vast.stop_bills_storage and vast.meter_stop_irreversible and vast.spot_available is True
    assert {v.verb for v in vast.teardown_verbs} == {"stop", "destroy"}
    runpod = load_profile(None, "runpod")
    container = next(t for t in runpod.storage if t.name == "container disk")
    assert container.survives(Effect.STOP) is False
    assert load_profile(None, "slurm").kind is Kind.SLURM
    assert load_profile(None, "local").teardown_verbs == ()
    generic = load_profile(None, "generic-ssh")
    volume = next(t for t in generic.storage if t.name == "attached block volume")
    assert volume.survives_destroy is None  # host-dependent
    assert any("24/7" in c.message for c in generic.standing_clocks())


def test_vast_stop_warns_storage_keeps_billing() -> None:
    text = "\n".join(teardown_consequences(load_profile(None, "vast"), "stop")).lower()
    assert "bills storage" in text
    assert "kept: instance disk" in text


def test_vast_destroy_says_the_disk_is_deleted() -> None:
    lines = teardown_consequences(load_profile(None, "vast"), "destroy")
    assert any(line.startswith("LOST: instance disk") and "deleted" in line for line in lines)
    assert "cannot be undone" in lines[0]
    assert any("verify" in line for line in lines)


def test_generic_names_reach_platform_verbs_and_unknown_actions_fail() -> None:
    runpod = load_profile(None, "runpod")
    lines = teardown_consequences(runpod, "destroy")
    assert lines[0].startswith("runpod terminate:")
    with pytest.raises(InputError, match="no teardown verb 'explode'"):
        teardown_consequences(runpod, "explode")
    with pytest.raises(InputError, match="nothing to tear down"):
        teardown_consequences(load_profile(None, "local"), "destroy")


VAST = shipped_profile_text("vast")


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("    survives_destroy: false", "    survives_destroy: maybe",
         "storage.0.survives_destroy", "true, false or host-dependent"),
        ("kind: ssh", "kind: ftp", "kind", "one of local | ssh"),
        ("meter_stop_irreversible: true", "meter_stop_irreversible: yes",
         "meter_stop_irreversible", "true or false"),
        ("    effect: destroy", "    effect: explode", "teardown_verbs.1.effect", "one of"),
        ("    after: [stop]", "    after: [reboot]",
         "danger_clocks.0.after.0", "not in teardown_verbs"),
        ("  - verb: destroy", "  - verb: stop # twice",
         "teardown_verbs.1", "repeats the verb 'stop'"),
        ("platform: vast", "platform: runpod", "platform", "the 'vast' profile"),
        ("    after: [stop]", "    after: stop", "danger_clocks.0.after", "must be a list"),
        ("stop_bills_storage: true", "stop_bills_storage: [true]",
         "stop_bills_storage", "not a list"),
    ],
)  # fmt: skip
def test_malformed_profile_names_line_and_field(
    tmp_path: Path, old: str, new: str, field: str, message: str
) -> None:
    text = VAST.replace(old, new, 1)
    assert text != VAST
    (tmp_path / "vast.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(FileFormatError) as caught:
        load_profile(tmp_path, "vast")
    err = caught.value
    assert err.path == tmp_path / "vast.yaml"
    assert err.field == field
    assert err.line == line_of(text, new)
    assert message in err.message
    assert f"vast.yaml:{err.line}" in str(err)


def test_missing_field_and_bad_yaml_point_at_a_line(tmp_path: Path) -> None:
    lines = VAST.splitlines()
    without_summary = "\n".join(line for line in lines if not line.startswith("summary:"))
    with pytest.raises(FileFormatError) as caught:
        parse_profile(without_summary, "vast.yaml", platform="vast")
    assert (caught.value.field, caught.value.line) == ("summary", 5)  # the mapping's first key

    broken = VAST.replace("  - verb: stop", "  - verb: [stop", 1)
    with pytest.raises(FileFormatError) as caught:
        parse_profile(broken, "vast.yaml")
    assert "not valid YAML" in caught.value.message
    assert caught.value.line is not None and caught.value.line >= line_of(broken, "verb: [stop")

    with pytest.raises(FileFormatError, match="is empty"):
        parse_profile("# only a comment\n", "vast.yaml")
    with pytest.raises(FileFormatError, match="mapping"):
        parse_profile("- a\n- b\n", "vast.yaml")


def test_unknown_keys_warn_instead_of_failing(tmp_path: Path) -> None:
    text = VAST.replace("kind: ssh", "kind: ssh\nregion: eu-west # newer field", 1)
    text = text.replace("    reversible: true", "    reversible: true\n    confirm_twice: true", 1)
    (tmp_path / "vast.yaml").write_text(text, encoding="utf-8")
    profile = load_profile(tmp_path, "vast")
    assert len(profile.warnings) == 2
    assert f"vast.yaml:{line_of(text, 'region:')}: unknown field 'region'" in profile.warnings[0]
    assert "'teardown_verbs.0.confirm_twice'" in profile.warnings[1]


def test_workspace_override_wins_and_adds_platforms(tmp_path: Path) -> None:
    override = VAST.replace("summary: Rented", "summary: OUR TEAM'S VAST RULES. Rented", 1).replace(
        "stop_bills_storage: true", "stop_bills_storage: true # checked 2026-06", 1
    )
    (tmp_path / "vast.yaml").write_text(override, encoding="utf-8")
    custom = shipped_profile_text("generic-ssh").replace("platform: generic-ssh", "platform: lab")
    (tmp_path / "lab.yaml").write_text(custom, encoding="utf-8")

    vast = load_profile(tmp_path, "vast")
    assert vast.origin == "workspace"
    assert vast.summary.startswith("OUR TEAM'S VAST RULES")
    assert vast.source == str(tmp_path / "vast.yaml")
    assert load_profile(tmp_path, "runpod").origin == "shipped"
    assert load_profile(tmp_path, "lab").platform == "lab"
    assert "lab" in list_profiles(tmp_path)
    assert "lab" not in list_profiles(None)


def test_unknown_or_unsafe_platform_names_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no profile for platform 'paperspace'"):
        load_profile(tmp_path, "paperspace")
    with pytest.raises(InputError, match="not a platform name"):
        load_profile(tmp_path, "../secrets")
    with pytest.raises(InputError, match="no shipped profile"):
        shipped_profile_text("paperspace")
