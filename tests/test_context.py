"""The library without Dagster: `Pipeline` reads the environment when built, and the command line's library
commands (ingest, sql, config show) never import Dagster."""

import subprocess
import sys
import textwrap

from alignment_pipeline import env
from alignment_pipeline.context import Pipeline


def _run(code: str, tmp_path) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in __import__("os").environ.items() if k not in env.ALL}
    environ[env.HOME] = str(tmp_path / "home")
    environ[env.PROFILE] = "smoke"
    return subprocess.run([sys.executable, *code], capture_output=True, text=True, env=environ, timeout=120,
                          cwd=tmp_path)


def test_cli_ingest_sql_and_config_show_load_no_dagster(tmp_path):
    code = textwrap.dedent("""
        import sys
        from typer.testing import CliRunner
        from alignment_pipeline.cli import app

        def dagster_modules():
            return sorted(m for m in sys.modules if m.startswith("dagster"))

        assert not dagster_modules(), dagster_modules()
        runner = CliRunner()
        for args in (["ingest", "prompts.txt"], ["sql", "SELECT count(*) AS n FROM prompts", "--format", "json"],
                     ["sql", "--list"],
                     ["config", "show", "--changes"], ["config", "show", "--profile", "paper"]):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, (args, result.output, result.exception)
            assert not dagster_modules(), (args, dagster_modules())
            if args[0] == "sql" and args[1].startswith("SELECT"):
                assert '"n": 1' in result.output, result.output
        print("ok")
    """)
    (tmp_path / "prompts.txt").write_text("What makes a promise binding?\n")
    result = _run(["-c", code], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")


def test_import_time_lists_no_dagster(tmp_path):
    result = _run(["-X", "importtime", "-c", "import alignment_pipeline.cli"], tmp_path)
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert "alignment_pipeline.cli" in imported
    assert not [m for m in imported if m.startswith("dagster")]


def test_from_env_reads_variables_when_called(tmp_path, monkeypatch):
    monkeypatch.setenv(env.PROFILE, "smoke")
    monkeypatch.setenv(env.HOME, str(tmp_path / "a"))
    monkeypatch.delenv(env.INBOX, raising=False)
    monkeypatch.delenv(env.SETTINGS, raising=False)
    first = Pipeline.from_env()
    assert (first.profile, first.home, first.inbox, first.settings_file) == ("smoke", str(tmp_path / "a"), None, None)

    settings = tmp_path / "settings.yaml"
    settings.write_text("prompts:\n  max_chars: 77\n")
    monkeypatch.setenv(env.PROFILE, "paper")
    monkeypatch.setenv(env.HOME, str(tmp_path / "b"))
    monkeypatch.setenv(env.INBOX, str(tmp_path / "inbox"))
    monkeypatch.setenv(env.SETTINGS, str(settings))
    second = Pipeline.from_env()
    assert second.profile == "paper" and second.home == str(tmp_path / "b")
    assert second.inbox_dir() == (tmp_path / "inbox").resolve()
    assert second.config().profile == "paper" and second.config().prompts.max_chars == 77
    assert second.layout().root == (tmp_path / "b").resolve()
    assert first.config().profile == "smoke"  # built earlier, unaffected by the later environment

    # Overrides given win; None falls back to the variable.
    third = Pipeline.from_env(profile="smoke", home=None)
    assert third.profile == "smoke" and third.home == str(tmp_path / "b")


def test_config_is_cached_per_object(tmp_path):
    pipeline = Pipeline(profile="smoke", home=str(tmp_path / "home"))
    assert pipeline.config() is pipeline.config()


def test_resource_delegates_to_pipeline(tmp_path, monkeypatch):
    from alignment_pipeline.defs.resources import PipelineResource, default_resource

    monkeypatch.setenv(env.HOME, str(tmp_path / "home"))
    monkeypatch.setenv(env.PROFILE, "smoke")
    monkeypatch.setenv(env.INBOX, str(tmp_path / "inbox"))
    monkeypatch.delenv(env.SETTINGS, raising=False)
    resource = default_resource()
    assert isinstance(resource, PipelineResource)
    assert resource.pipeline() == Pipeline.from_env()
    assert resource.config().profile == "smoke"
    assert resource.inbox_dir() == (tmp_path / "inbox").resolve()
    assert resource.layout().root == (tmp_path / "home").resolve()
