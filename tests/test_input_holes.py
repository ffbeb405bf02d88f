"""The last input holes: BOM-less UTF-16 text in scripts without NUL-heavy bytes, default-ignorable and unassigned
code points as prompts, booleans and infinities as numbers, a `profile:` key in a settings file, and a settings
error from any command printed as one line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from alignment_pipeline.cli import app
from alignment_pipeline.config import SettingsError, load_profile
from alignment_pipeline.prompts.readers import PromptFileError, read_prompt_file

runner = CliRunner()
CHINESE = "你好世界\n请介绍一下你自己\n什么是诚实?\n"


@pytest.mark.parametrize("codec, named", [("utf-16-le", "UTF-16-LE"), ("utf-16-be", "UTF-16-BE"),
                                          ("utf-32-le", "UTF-32"), ("utf-32-be", "UTF-32")])
def test_bomless_wide_text_in_any_script_is_refused_whole(tmp_path, codec, named):
    path = tmp_path / "chinese.txt"
    path.write_bytes(CHINESE.encode(codec))
    with pytest.raises(PromptFileError, match=f"{named} encoded without a BOM.*must be UTF-8"):
        read_prompt_file(path)


def test_utf8_text_with_a_stray_nul_is_still_read_line_by_line(tmp_path):
    path = tmp_path / "stray.txt"
    path.write_bytes(b"first prompt\nsecond\0prompt\nthird prompt\n")
    parsed = read_prompt_file(path)
    assert [r.text for r in parsed.rows] == ["first prompt", "third prompt"]
    assert [r.line for r in parsed.rejections] == [2]


def test_chinese_utf8_is_accepted(tmp_path):
    path = tmp_path / "ok.txt"
    path.write_text(CHINESE, encoding="utf-8")
    assert [r.text for r in read_prompt_file(path).rows] == CHINESE.split()


@pytest.mark.parametrize("char", ["\u2065", "\ufff0", "\U000e0000", "\U000e0080", "\U000e0041", "\u034f",
                                  "\u180e", "\U0001d173", "\ufe0f", "\u0378"])
def test_default_ignorable_and_unassigned_code_points_alone_are_rejected(tmp_path, char):
    path = tmp_path / "p.txt"
    path.write_text(f"{char}\n{char}{char} \u200b\nA visible one {char}\n", encoding="utf-8")
    parsed = read_prompt_file(path)
    assert [r.line for r in parsed.rejections] == [1, 2]
    assert all(r.reason.startswith("no visible characters") for r in parsed.rejections)
    assert [r.line for r in parsed.rows] == [3]


def test_private_use_still_counts_as_visible(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\ue000\n", encoding="utf-8")
    assert len(read_prompt_file(path).rows) == 1


@pytest.mark.parametrize("text, named", [
    ("training: {learning_rate: .inf}\n", "training.learning_rate: Input should be a finite number"),
    ("training: {learning_rate: .nan}\n", "training.learning_rate: Input should be a finite number"),
    ("training: {learning_rate: -.inf}\n", "training.learning_rate"),
    ("training: {learning_rate: true}\n", "training.learning_rate: Value error, expected a number, got the boolean"),
    ("training: {epochs: true}\n", "training.epochs: Value error, expected a number, got the boolean true"),
    ("training: {max_grad_norm: false}\n", "training.max_grad_norm"),
    ("profile: paper\n", "a top-level `profile: paper` is not a setting"),
])
def test_numbers_are_finite_and_of_their_type_and_profile_is_not_a_setting(tmp_path, text, named):
    settings = tmp_path / "s.yaml"
    settings.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load_profile("smoke", settings_file=settings)
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_booleans_where_booleans_belong_still_load(tmp_path):
    settings = tmp_path / "s.yaml"
    settings.write_text("training: {lora: true, register_model: false, learning_rate: 1e-3, epochs: 2}\n")
    config = load_profile("smoke", settings_file=settings).training
    assert config.lora is True and config.register_model is False and config.epochs == 2
    assert config.learning_rate == pytest.approx(1e-3)


@pytest.mark.parametrize("argv", [["ingest", "{prompts}"], ["config", "show"],
                                  ["train", "estimate"]])
def test_every_command_reports_a_settings_error_in_one_line(home, tmp_path, argv):
    prompts = tmp_path / "p.txt"
    prompts.write_text("A question?\n")
    settings = tmp_path / "bad.yaml"
    settings.write_text("training: {learning_rate: true}\n")
    args = [a.format(prompts=prompts, out=tmp_path / "out") for a in argv]
    result = runner.invoke(app, ["--settings", str(settings), *args])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "training.learning_rate" in lines[0] and "Traceback" not in result.output, lines
