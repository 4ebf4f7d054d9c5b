"""The README stays true: its config table is generated, its commands parse and are exercised."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from redis_consumer.cli.config import builtin_consumer_specs
from redis_consumer.cli.config import (
    markdown as markdown_table,  # core table + built-in consumers' own
)
from redis_consumer.cli.main import build_parser
from redis_consumer.settings import SPECS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

#: Each CLI subcommand the README shows -> tests that run it (module::function).
EXERCISED = {
    "consume": ["tests.test_cli::test_submit_wait_with_a_real_worker", "tests.test_worker_recovery"],
    "submit": ["tests.test_cli::test_submit_writes_kiosk_job_hashes_and_uploads",
               "tests.test_cli::test_submit_glob_json_and_zip_goes_to_zip_queue",
               "tests.test_cli::test_submit_wait_with_a_real_worker"],
    "status": ["tests.test_cli::test_status_exit_codes_and_json"],
    "results": ["tests.test_cli::test_results_downloads_and_unpacks"],
    "logs": ["tests.test_cli::test_logs_prints_and_follows_until_final"],
    "watch": ["tests.test_cli::test_watch_once_counts_every_column"],
    "dead": ["tests.test_cli::test_dead_list_requeue_purge"],
    "config": ["tests.test_cli::test_config_markdown_is_the_settings_table"],
    "demo": ["tests.test_demo::test_demo_runs_to_completion",
             "tests.test_demo::test_demo_uses_redis_url_and_stops_everything_on_ctrl_c"],
    "exporter": ["tests.test_exporter::test_exporter_command_serves_exact_metrics",
                 "tests.test_readme::test_exporter_once_as_shown"],
    "serve-model": ["tests.helpers.model_server"],
}


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL)


def commands() -> list[list[str]]:
    """Every command line in the README's sh blocks, comments and VAR=value prefixes removed."""
    out = []
    for block in shell_blocks():
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                words.pop(0)
            if words:
                out.append(words)
    return out


def section(name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", README, flags=re.DOTALL)
    assert match, f"README lacks the {name} markers"
    return match.group(1)


def test_config_table_is_generated_from_settings():
    assert section("config-table").strip() == markdown_table(), (
        "README's configuration table is stale: run `.venv/bin/python -m tests.test_readme` to regenerate it"
    )
    for spec in SPECS:
        assert f"`{spec.name}`" in README
        for alias in spec.aliases:  # the kiosk's old names are documented too
            assert f"`{alias}`" in section("config-table")
    for specs in builtin_consumer_specs().values():
        for spec in specs:
            assert spec.row() in README


def test_bench_section_is_marked():
    assert section("bench-results").strip()


def test_readme_has_the_required_parts():
    for heading in ("## Two commands", "## How data flows", "## The job protocol", "## Configuration",
                    "## Writing a custom consumer", "## Deploying", "## Operating it", "## Benchmarks",
                    "## Troubleshooting", "## Security notes"):
        assert heading in README
    assert "```mermaid\nflowchart" in README
    assert "make demo" in README and "make test" in README


def test_every_cli_command_in_the_readme_parses_and_is_exercised():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    shown = set()
    for words in commands():
        if Path(words[0]).name != "redis-consumer":
            continue
        try:
            args = parser.parse_args(words[1:])
        except SystemExit as exc:  # argparse error: the README shows a command that does not parse
            pytest.fail(f"README command does not parse ({exc}): {' '.join(words)}")
        assert args.command in EXERCISED, f"no test exercises `redis-consumer {args.command}`"
        shown.add(args.command)
    assert shown >= {"submit", "status", "results", "logs", "watch", "dead", "config", "demo", "exporter", "consume"}
    for name in sub.choices:  # every subcommand is documented in the command table
        assert f"| `{name}" in README, f"README command table lacks {name}"


def test_exercising_tests_exist():
    for refs in EXERCISED.values():
        for ref in refs:
            module_name, _, func = ref.partition("::")
            module = importlib.import_module(module_name)
            if func:
                assert callable(getattr(module, func, None)), ref


def test_other_commands_are_real():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z][\w-]*):", makefile, flags=re.MULTILINE))
    for words in commands():
        tool = Path(words[0]).name
        if tool == "redis-consumer":
            continue
        if tool == "make":
            assert set(words[1:]) <= targets, words
        elif tool == "helmfile":
            helmfile = ROOT / words[words.index("-f") + 1]
            env = words[words.index("-e") + 1]
            assert helmfile.exists() and f"  {env}:" in helmfile.read_text()
            importlib.import_module("tests.test_helm")  # renders every release of that helmfile
        elif tool == "pip":
            assert (ROOT / words[-1] / "pyproject.toml").exists()
            importlib.import_module("tests.test_classify_example")  # installs and runs it
        else:
            pytest.fail(f"README shows a command no test covers: {' '.join(words)}")


def test_relative_links_exist():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README links to a missing file: {target}"


def test_exporter_once_as_shown(redis_server, rds):
    rds.sadd("queues", "segmentation")
    proc = subprocess.run([sys.executable, "-m", "redis_consumer.cli.main", "exporter", "--once"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "REDIS_URL": redis_server.url})
    assert proc.returncode == 0, proc.stderr
    assert 'redis_consumer_queue_items{queue="segmentation"} 0.0' in proc.stdout


def update_readme() -> None:
    """Rewrite the README's generated configuration table from settings.SPECS."""
    path = ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    start, end = "<!-- config-table:start -->\n", "<!-- config-table:end -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + start + markdown_table() + "\n" + end + tail, encoding="utf-8")


if __name__ == "__main__":
    update_readme()


def test_benchmark_section_matches_the_last_bench_run():
    """`make bench` rewrites the README's benchmark section from bench/results.json; they must agree."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import report
    finally:
        sys.path.pop(0)
    doc = json.loads((ROOT / "bench" / "results.json").read_text(encoding="utf-8"))
    assert section("bench-results") == report.readme_section(doc), (
        "README's benchmark section is stale: run `make bench` (or bench/report.update_readme)"
    )
