"""Models by hub id or local dir (mtbi/hub.py), served offline from a hub cache the test builds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hub_fixtures import add_to_hub_cache
from teacher_fixtures import make_random_teacher

from mtbi.config import load_config
from mtbi.errors import MtbiError
from mtbi.hub import ResolvedModel, is_hub_id, relative_path, resolve_model
from mtbi.prepare.teacher import INFO_FILE, TeacherConfig, prepare_teacher, teacher_model, teacher_step
from mtbi.tasks.bank import load_task_bank


def test_hub_ids_and_relative_references(tmp_path: Path) -> None:
    assert is_hub_id("Qwen/Qwen2.5-7B-Instruct") and is_hub_id("openai/whisper-large-v3")
    assert not any(map(is_hub_id, ["../teacher", "./whisper", "/data/models/qwen", "whisper", "a/b/c"]))
    (tmp_path / "exp" / "encoder").mkdir(parents=True)
    (tmp_path / "models" / "whisper").mkdir(parents=True)
    assert relative_path(tmp_path / "models" / "whisper", tmp_path / "exp" / "encoder") == "../../models/whisper"
    assert relative_path(tmp_path / "exp" / "encoder" / "w", tmp_path / "exp" / "encoder") == "./w"
    local = ResolvedModel(tmp_path / "models" / "whisper")
    assert local.reference(tmp_path / "exp") == {"model": "../models/whisper", "revision": None}
    assert ResolvedModel(tmp_path, "org/m", "c" * 40).reference(tmp_path) == {"model": "org/m", "revision": "c" * 40}


def test_a_hub_id_resolves_offline_from_the_cache(tmp_path: Path, hub_cache: Path) -> None:
    teacher = make_random_teacher(tmp_path / "teacher")
    commit = add_to_hub_cache(hub_cache, "mtbi-test/tiny-llama", teacher)
    resolved = resolve_model("mtbi-test/tiny-llama")
    assert resolved.hub_id == "mtbi-test/tiny-llama" and resolved.commit == commit
    assert resolved.path == hub_cache / "models--mtbi-test--tiny-llama" / "snapshots" / commit
    assert (resolved.path / "config.json").read_bytes() == (teacher / "config.json").read_bytes()
    assert resolve_model("mtbi-test/tiny-llama", revision=commit) == resolved
    # A local dir of that name comes first (relative paths from base_dir).
    (tmp_path / "mtbi-test" / "tiny-llama").mkdir(parents=True)
    assert resolve_model("mtbi-test/tiny-llama", base_dir=tmp_path).hub_id is None


@pytest.mark.parametrize("model, revision, message", [
    ("mtbi-test/absent", None, r"teacher model_dir 'mtbi-test/absent' is not in the hub cache .*/hub and the hub "
                               r"cannot be reached \(HF_HUB_OFFLINE=1 or no network\); download it"),
    ("mtbi-test/tiny-llama", "v2", r"'mtbi-test/tiny-llama@v2' is not in the hub cache"),
    ("../nowhere", None, r"teacher model_dir '../nowhere': no such local dir .*, and not a hub id"),
])
def test_unresolvable_models_are_one_line_errors(tmp_path: Path, hub_cache: Path, model: str,
                                                 revision: str | None, message: str) -> None:
    add_to_hub_cache(hub_cache, "mtbi-test/tiny-llama", make_random_teacher(tmp_path / "teacher"))
    with pytest.raises(MtbiError, match=message):
        resolve_model(model, revision, what="teacher model_dir")
    with pytest.raises(MtbiError, match="is a local dir, so revision 'main' cannot apply"):
        resolve_model(str(tmp_path / "teacher"), "main")


def test_stage_4_pins_the_hub_commit_that_later_stages_use(tmp_path: Path, hub_cache: Path) -> None:
    first = add_to_hub_cache(hub_cache, "mtbi-test/tiny-llama", make_random_teacher(tmp_path / "v1", seed=1))
    conf = tmp_path / "teacher.yaml"
    conf.write_text(yaml.safe_dump({"kind": "hf", "name": "tiny", "model_dir": "mtbi-test/tiny-llama",
                                    "dtype": "bfloat16"}))
    config = load_config(conf, TeacherConfig)
    bank = load_task_bank()
    exp = tmp_path / "exp" / "teacher"
    step = teacher_step(config, exp, bank, [])
    info = prepare_teacher(config, exp, bank, [], [])
    step.mark_done()
    assert info["model"] == {"model": "mtbi-test/tiny-llama", "revision": first}
    assert json.loads((exp / INFO_FILE).read_text())["model"]["revision"] == first
    second = add_to_hub_cache(hub_cache, "mtbi-test/tiny-llama", make_random_teacher(tmp_path / "v2", seed=2))
    assert second != first and resolve_model("mtbi-test/tiny-llama").commit == second  # main moved on
    assert teacher_model(config, exp).commit == first  # stages 5-7 keep stage 4's commit
    # Another revision is another config: stage 4 runs again and pins it.
    changed = load_config(conf, TeacherConfig, [f"revision={second}"])
    assert not teacher_step(changed, exp, bank, []).skip("done")
    assert teacher_model(changed, exp).commit == second
