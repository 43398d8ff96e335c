import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from services.cli import build_parser
from services.cli.search import _overrides, _search_overrides
from services.config import load_config

EX = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
RAYNAS = [sys.executable, "-m", "services.cli"]


def raynas(*args, cwd=None):
    return subprocess.run([*RAYNAS, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "table.json"
    path.write_text(json.dumps({EX: {"valid": 91.2, "test": 93.9}}))
    return path


@pytest.mark.parametrize("args,message", [
    (["--algo", "foo"], "raynas search: argument --algo: invalid choice: 'foo'"),
    (["--space", "darts"], "raynas search: argument --space: invalid choice: 'darts'"),
    (["--reward-key", "accuracy"], "has no metric named 'accuracy' (it has 'valid', 'test')"),
    (["--budget", "0"], "budget must be >= 1"),
])
def test_bad_search_arguments_one_line_exit_2(tmp_path, table, args, message):
    base = ["search", "--space", "nb201", "--evaluator", "table", "--table", str(table), "--reward-key", "valid",
            "--algo", "ppo", "--budget", "10", "--out", str(tmp_path / "out")]
    for flag, value in zip(args[::2], args[1::2]):
        base[base.index(flag) + 1] = value
    result = raynas(*base)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raynas: error:") and message in lines[0], result.stderr


def test_missing_dataset_and_resume_errors(tmp_path):
    result = raynas("search", "--config", str(Path(__file__).parents[1] / "configs" / "quick-cpu.yaml"),
                    "--data-dir", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "no dataset found in" in result.stderr
    result = raynas("search", "--resume", str(tmp_path))
    assert result.returncode == 2 and "holds no search to resume" in result.stderr


def test_flags_override_the_yaml(tmp_path, table):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"algo: reinforce\nbudget: 50\nseed: 3\nevaluator: {{type: table, table: {table}}}\n"
                        "space: {name: nb201}\n")
    args = build_parser().parse_args(["search", "--config", str(cfg_file), "--algo", "random", "--budget", "7"])
    cfg = load_config(args.config, _search_overrides(args))
    assert (cfg.algo, cfg.budget, cfg.seed, cfg.evaluator.table) == ("random", 7, 3, str(table))


def test_set_overrides_any_key_typed_and_checked(tmp_path, table):
    parse = lambda *argv: build_parser().parse_args(["search", "--config", str(cfg_file), *argv])  # noqa: E731
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"evaluator: {{type: table, table: {table}, reward_key: valid}}\nspace: {{name: nb201}}\n")
    cfg = load_config(cfg_file, _overrides(parse("--set", "ppo.clip_param=0.3", "--set", "budget=12")))
    assert (cfg.ppo.clip_param, cfg.budget) == (0.3, 12)
    for argv, said in ((["--set", "ppo.clip_parm=0.3"], "clip_parm"), (["--set", "budget=many"], "budget"),
                       (["--set", "budget"], "expected KEY=VALUE"),
                       (["--budget", "5", "--set", "budget=6"], "budget is given twice")):
        result = raynas("search", "--config", str(cfg_file), *argv, "--out", str(tmp_path / "o"))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and said in lines[0], result.stderr


def test_resume_refuses_options_it_would_ignore(tmp_path):
    for command in (["search", "--resume", str(tmp_path), "--budget", "9", "--set", "seed=1"],
                    ["compare", "--resume", str(tmp_path), "--seeds", "5"]):
        result = raynas(*command)
        assert result.returncode == 2, result.stderr
        assert "as it was configured; drop --" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = raynas("compare", "--out", str(tmp_path))  # accepted and unused before: now unknown
    assert result.returncode == 2 and "unrecognized arguments: --out" in result.stderr


def test_flag_choices_are_the_registries():
    from controller_policy.algorithms import ALGORITHMS
    from controller_policy.spaces import SPACES
    from controller_policy.settings import ALGORITHM_NAMES
    from services.cli.common import EVALUATORS, SPACE_NAMES
    from services.config import EVALUATORS as CONFIG_EVALUATORS

    assert set(SPACE_NAMES) == set(SPACES) and set(ALGORITHM_NAMES) == set(ALGORITHMS)
    assert EVALUATORS == CONFIG_EVALUATORS


def test_saved_config_has_absolute_paths_for_resume(ray_session, tmp_path, monkeypatch):
    """A search resumed from another directory still finds its table, data and outputs."""
    from controller_policy.landscapes import nb201_landscape
    from services.config import load_run_config
    from services.search import run_search

    table = tmp_path / "table.json"
    table.write_text(json.dumps(nb201_landscape(0)))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, {"space.name": "nb201", "evaluator.type": "table", "evaluator.table": "table.json",
                             "evaluator.reward_key": "valid", "budget": 4, "out": "out"})
    assert run_search(cfg)["evaluated"] == 4
    saved = load_run_config(tmp_path / "out")
    assert saved.out == str(tmp_path / "out") and saved.evaluator.table == str(table)
    # --address and --verbose are the options a resumed search honours (another cluster, more output)
    from services.cli.search import resume_config

    args = build_parser().parse_args(["search", "--resume", "out", "--address", "ray://elsewhere:10001", "--verbose"])
    resumed = resume_config(args)
    assert (resumed.ray_address, resumed.verbose) == ("ray://elsewhere:10001", True)
    assert resumed.budget == 4 and resumed.evaluator.table == str(table)


def test_a_checkpoint_half_written_when_the_search_was_killed_is_never_resumed_from(ray_session, tmp_path):
    """A kill during a save leaves ``iter_NNNNNN.tmp`` (seen in CI: the service's resubmitted job then
    failed with "pickle data was truncated"); resume uses the newest complete checkpoint instead."""
    from controller_policy.landscapes import nb201_landscape
    from services.api.server import search_command
    from services.config import load_run_config
    from services.search import latest_checkpoint, run_search

    table = tmp_path / "table.json"
    table.write_text(json.dumps(nb201_landscape(0)))
    out = tmp_path / "out"
    cfg = load_config(None, {"space.name": "nb201", "evaluator.type": "table", "evaluator.table": str(table),
                             "evaluator.reward_key": "valid", "budget": 16, "episodes_per_iteration": 4,
                             "out": str(out)})
    run_search(cfg, stop_after=2)
    complete = out / "checkpoints" / "iter_000002"
    assert latest_checkpoint(out) == complete
    half = out / "checkpoints" / "iter_000003.tmp"
    shutil.copytree(complete, half)
    for pickle_file in half.rglob("*.pkl"):
        pickle_file.write_bytes(pickle_file.read_bytes()[:10])
    assert latest_checkpoint(out) == complete

    assert search_command(SimpleNamespace(output_dir=str(out), attempt=2)) == ["search", "--resume", str(out)]
    only_half = tmp_path / "only-half"  # killed during its first save: the service starts it anew
    shutil.copytree(half, only_half / "checkpoints" / "iter_000001.tmp")
    shutil.copy(out / "config.json", only_half)
    assert search_command(SimpleNamespace(output_dir=str(only_half), attempt=2)) == ["search", "--config", "config.yaml"]
    summary = run_search(load_run_config(out), resume=True)
    assert summary["evaluated"] == 16
    rows = [json.loads(line)["sample"] for line in (out / "trajectory.jsonl").read_text().splitlines()]
    assert rows == list(range(16))



def test_compare_rejects_an_unknown_algorithm_before_starting(tmp_path, table):
    result = raynas("compare", "--space", "nb201", "--evaluator", "table", "--table", str(table), "--reward-key",
                    "valid", "--algos", "ppo,foo", "--storage", str(tmp_path / "tune"))
    assert result.returncode == 2 and "unknown algorithm 'foo'" in result.stderr
    assert not (tmp_path / "tune").exists()


def test_ray_noise_is_dropped_unless_verbose(tmp_path):
    from controller_policy.landscapes import nb201_landscape

    table = tmp_path / "landscape.json"
    table.write_text(json.dumps(nb201_landscape(0)))
    base = ["search", "--space", "nb201", "--evaluator", "table", "--table", str(table), "--reward-key", "valid",
            "--budget", "8", "--out", str(tmp_path / "o")]
    quiet = raynas(*base)
    assert quiet.returncode == 0, quiet.stderr
    everything = quiet.stdout + quiet.stderr
    for noise in ("on the new API stack", "RLModuleConfig", "gputil", "Overriding environment"):
        assert noise not in everything, everything
    loud = raynas(*base, "--verbose")
    assert loud.returncode == 0 and "on the new API stack" in loud.stdout + loud.stderr


def test_the_next_command_names_the_retrain_preset_of_the_searched_space():
    from services.cli.summary import retrain_command

    arch = Path("runs/x/best_arch.json")
    assert retrain_command("enas_macro", {"num_layers": 4}, arch, "../shared/data/cifar10") == (
        "raynas retrain runs/x/best_arch.json --config configs/retrain-quick-cpu.yaml --data-dir ../shared/data/cifar10")
    assert retrain_command("enas_macro", {"num_layers": 12}, arch, None) == (
        "raynas retrain runs/x/best_arch.json --config configs/retrain-macro.yaml --set space.params.num_layers=12")
    assert retrain_command("enas_micro", {"num_nodes": 5}, arch, None).endswith("--config configs/retrain-micro.yaml")
    assert retrain_command("nb201", {}, arch, None).endswith("--config configs/retrain-nb201.yaml")
    for space, params in (("enas_macro", {"num_layers": 4}), ("enas_macro", {"num_layers": 12}), ("nb201", {})):
        command = retrain_command(space, params, arch, "DIR")
        build_parser().parse_args(command.split()[1:])  # a command the real parser takes


def test_a_tabular_search_ends_with_what_it_found(tmp_path):
    from controller_policy.landscapes import nb201_landscape

    table = tmp_path / "landscape.json"
    table.write_text(json.dumps(nb201_landscape(0)))
    result = raynas("search", "--space", "nb201", "--evaluator", "table", "--table", str(table), "--reward-key",
                    "valid", "--budget", "8", "--out", str(tmp_path / "o"))
    lines = [line for line in result.stdout.splitlines() if not line.startswith("[raynas] 8/8")]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert lines[-4] == f"[raynas] found  {summary['best']['arch']}"
    assert lines[-3].startswith(f"[raynas]        reward {summary['best']['reward']:.4f} (valid's value; test ")
    assert lines[-2] == (f"[raynas] files  {tmp_path / 'o'}/: best_arch.json, summary.json, trajectory.jsonl, "
                         "progress.json, config.json, checkpoints/")
    assert lines[-1].startswith(f"[raynas] next   raynas compare --space nb201 --evaluator table --table {table} "
                                "--reward-key valid --budget 8 --algos ppo,reinforce,rea,random --seeds 3")
    build_parser().parse_args(lines[-1].split("#")[0].split()[3:])


def test_compare_resolves_a_relative_table_and_exits_non_zero_when_trials_fail(tmp_path):
    """The table is named relative to the caller's directory (trials run in directories of their own);
    the macro space is too large to check the table's coverage up front, so its trials fail on a
    missing architecture: one line each, where the traceback is, exit 1."""
    import numpy as np

    from controller_policy.spaces import build_space

    space = build_space("enas_macro")
    rng = np.random.default_rng(0)
    (tmp_path / "t.json").write_text(json.dumps({space.to_string(space.sample(rng)): 0.5 for _ in range(3)}))
    result = raynas("compare", "--space", "enas_macro", "--evaluator", "table", "--table", "t.json", "--budget", "8",
                    "--algos", "random", "--seeds", "1", "--storage", "tune", "--address", "local", cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr
    failed = [line for line in result.stdout.splitlines() if ": failed: " in line]
    assert len(failed) == 1 and failed[0].startswith("[raynas] random     seed 0: failed: KeyError: architecture ")
    assert f"is not in table {tmp_path / 't.json'}  (traceback: {tmp_path}/tune/compare/search_trial_" in failed[0]
    assert Path(failed[0].split("(traceback: ")[1].rstrip(")")).is_file()
    assert "Traceback" not in result.stdout + result.stderr and "Trials did not complete" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "raynas: error: 1 of 1 trials failed (their lines above say why)"


def test_checked_before_anything_starts(tmp_path):
    """A table that lacks architectures of the space, a directory without a dataset, a compare
    experiment that is not one: refused in one line before Ray (or torch) is imported."""
    from controller_policy.landscapes import nb201_landscape

    table = dict(nb201_landscape(0))
    missing = next(iter(table))
    del table[missing]
    (tmp_path / "t.json").write_text(json.dumps(table))
    for argv, said in (
            (["search", "--space", "nb201", "--evaluator", "table", "--table", "t.json", "--reward-key", "valid"],
             f"table {tmp_path / 't.json'} has 15624 of the 15625 architectures of the nb201 space; a search can "
             f"sample any of them, and {missing} is missing"),
            (["search", "--data-dir", "."],
             f"no dataset found in {tmp_path}: expected train.npz and test.npz"),
            (["compare", "--resume", "nowhere"], "nowhere is not a raynas compare experiment (no raynas_compare.json)"),
            (["search", "--set", "ppo.lr=abc"], "ppo.lr must be a number or null, got 'abc' (a string); e.g. 0.001"),
            (["search", "--bogus"], "raynas: error: unrecognized arguments: --bogus (see `raynas --help`)")):
        result = raynas(*argv, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and said in result.stderr, result.stderr
        assert result.stdout == ""  # not even "connecting to Ray"


def test_the_refusals_import_neither_torch_nor_ray():
    code = ("import sys; from services.cli import main\n"
            "try:\n    main(['search', '--budget', '-5'])\nexcept SystemExit as exc:\n    assert exc.code == 2\n"
            "heavy = [m for m in ('torch', 'ray') if m in sys.modules]\nassert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_version():
    from importlib.metadata import version

    result = raynas("--version")
    assert result.returncode == 0 and result.stdout == f"raynas {version('raynas')}\n"


def test_worker_output_reaches_a_pipe_without_colour_codes(tmp_path):
    """Ray prefixes what a worker prints with `(task pid=...)`, coloured: not into a pipe. The
    embedded instance's workers drop Tune's setup-time message from their start."""
    code = ("import logging, time, ray\nfrom services.ray_cluster import connect\nconnect('local', 1)\n"
            "@ray.remote\ndef probe():\n    print('hello from a worker', flush=True)\n"
            "    return [getattr(f, 'words', '') for f in logging.getLogger('ray.tune.trainable.trainable').filters]\n"
            "print(ray.get(probe.remote()), flush=True)\ntime.sleep(3)\nray.shutdown()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr
    assert "hello from a worker" in result.stdout and "\x1b[" not in result.stdout + result.stderr, result.stdout
    assert "['Trainable.setup took']" in result.stdout


def test_an_address_nobody_answers_at_is_one_line_at_once(tmp_path):
    from controller_policy.landscapes import nb201_landscape
    from tests.ray_head import free_port

    (tmp_path / "t.json").write_text(json.dumps(nb201_landscape(0)))
    address = f"127.0.0.1:{free_port()}"
    started = time.time()
    result = raynas("search", "--space", "nb201", "--evaluator", "table", "--table", "t.json", "--reward-key", "valid",
                    "--address", address, cwd=tmp_path)
    assert result.returncode == 2 and time.time() - started < 60  # Ray alone retries for minutes
    assert result.stderr == (f"raynas: error: cannot join the Ray cluster at {address}: nothing answers there "
                             "(Connection refused) (is it running? check the address, or leave --address out for an "
                             "embedded instance)\n"), result.stderr


def test_show_reads_every_file_a_search_writes(tmp_path):
    """best_arch.json (a tabular search writes one too), summary.json, top_archs.json (--rank), a line of
    trajectory.jsonl; the space from the file or the search's config.json; --out - to stdout."""
    from controller_policy.landscapes import nb201_landscape

    (tmp_path / "t.json").write_text(json.dumps(nb201_landscape(0)))
    out = tmp_path / "o"
    result = raynas("search", "--space", "nb201", "--evaluator", "table", "--table", "t.json", "--reward-key", "valid",
                    "--budget", "8", "--out", "o", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    best = json.loads((out / "best_arch.json").read_text())
    assert (best["arch"], best["reward"], best["space"]) == (summary["best"]["arch"], summary["best"]["reward"], "nb201")
    rows = (out / "trajectory.jsonl").read_text().splitlines()
    (out / "row.json").write_text(rows[2] + "\n")  # the space comes from the search's config.json beside it
    (out / "top_archs.json").write_text(json.dumps([best, {**best, **{"arch": json.loads(rows[2])["arch"]},
                                                           "json": None}]))
    for argv, arch in ((["best_arch.json"], best["arch"]), (["summary.json"], best["arch"]),
                       (["row.json"], json.loads(rows[2])["arch"]), (["top_archs.json", "--rank", "2"],
                                                                      json.loads(rows[2])["arch"])):
        shown = raynas("show", str(out / argv[0]), *argv[1:], "--format", "dot", "--out", "-")
        assert shown.returncode == 0 and shown.stdout.startswith(f'digraph "nb201: {arch}"'), shown.stderr
    png = subprocess.run([*RAYNAS, "show", str(out / "summary.json"), "--out", "-"], capture_output=True, timeout=120)
    assert png.returncode == 0 and png.stdout.startswith(b"\x89PNG")
    whole = raynas("show", str(out / "trajectory.jsonl"))
    assert whole.returncode == 2 and "8 JSON lines (a trajectory?)" in whole.stderr
    rank = raynas("show", str(out / "top_archs.json"), "--rank", "3")
    assert rank.returncode == 2 and "--rank 3: the file lists 2 architectures" in rank.stderr


def test_a_failed_start_claims_no_results_it_does_not_have(tmp_path):
    from services.config import to_dict

    cfg = load_config(None, {"space.name": "nb201", "evaluator.type": "table", "evaluator.table": str(tmp_path / "t.json"),
                             "evaluator.reward_key": "valid", "out": str(tmp_path / "out")})
    from controller_policy.landscapes import nb201_landscape

    (tmp_path / "t.json").write_text(json.dumps(nb201_landscape(0)))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text(json.dumps(to_dict(cfg)))
    result = raynas("search", "--resume", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr == f"raynas: error: no checkpoint in {tmp_path / 'out' / 'checkpoints'} to resume from\n"
