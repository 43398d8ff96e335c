"""`raynas submit` / `raynas jobs` against a real head started by the test (Jobs API on 127.0.0.1)."""
import json
from pathlib import Path

import pytest
import yaml

from controller_policy.landscapes import nb201_landscape
from services.cli import main
from services.config import to_dict
from services.jobs import JobsError, entrypoint, project_runtime_env
from tests.ray_head import free_port


def run_cli(capsys, *argv):
    """Run the CLI; return (exit code, stdout, stderr)."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_entrypoint_runs_the_shipped_cli():
    assert entrypoint(["raynas", "search", "--config", "a b.yaml"]) == "python -m services.cli search --config 'a b.yaml'"
    assert entrypoint(["report", "x"]) == "python -m services.cli report x"
    for bad, said in (([], "nothing to submit"), (["raynas"], "nothing to submit"), (["rm", "-rf", "/"], "cannot submit 'rm'")):
        with pytest.raises(JobsError, match=said):
            entrypoint(bad)


def test_runtime_env_ships_the_checkout_or_the_packages(tmp_path):
    here = Path(__file__).resolve().parents[1]
    env = project_runtime_env(here)
    assert env["working_dir"] == str(here) and "py_modules" not in env and ".venv" in env["excludes"]
    env = project_runtime_env(tmp_path)  # elsewhere: the packages travel as py_modules
    assert sorted(Path(p).name for p in env["py_modules"]) == ["controller_policy", "services", "supernet_worker"]
    with pytest.raises(JobsError, match="not a directory"):
        project_runtime_env(tmp_path / "missing")


def test_unreachable_address_is_one_clear_line(capsys):
    code, _, err = run_cli(capsys, "jobs", "list", "--address", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and "cannot reach the Ray Jobs API at http://127.0.0.1:" in err and len(err.splitlines()) == 1
    code, _, err = run_cli(capsys, "jobs", "list", "--follow", "--address", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and err.strip() == "raynas: error: --follow goes with `raynas jobs logs`, not `list`"


def test_submit_checks_the_jobs_command_here_first(tmp_path, capsys):
    """A typo in the job's command fails now, in one line, before any cluster is contacted (the
    address below answers nothing), not minutes later in the job's log."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "c.yaml").write_text("evaluator: {type: table, table: t.json}\nspace: {name: nb201}\n")
    submit = ["submit", "--address", nowhere, "--working-dir", str(tmp_path), "--"]
    for job, said in (
        (["raynas", "search", "--algo", "bogus"], "the job's command: raynas search: argument --algo: invalid choice"),
        (["raynas", "search", "--config", "missing.yaml"],
         f"the job's --config missing.yaml: no such file in the working directory {tmp_path}"),
        (["raynas", "search", "--config", "c.yaml", "--set", "ppo.clip_parm=0.3"], "clip_parm"),
        (["raynas", "compare", "--config", "c.yaml", "--budget", "-3"], "the job's command: "),
        (["raynas", "retrain", "a.json", "--config", "c.yaml", "--gpus", "2", "--workers", "2"], "give one of them"),
        (["rm", "-rf", "/"], "the job's command: cannot submit 'rm'"),
    ):
        code, out, err = run_cli(capsys, *submit, *job)
        assert code == 2 and said in err and len(err.splitlines()) == 1 and not out, (job, err)
    # a valid command gets as far as the (absent) cluster; so does an absolute --config that may
    # exist only on the cluster, and --resume (the search's saved config is there)
    for job in (["raynas", "search", "--config", "c.yaml", "--budget", "8"],
                ["search", "--config", "/on/the/cluster.yaml"], ["search", "--resume", "runs/x"]):
        code, _, err = run_cli(capsys, *submit, *job)
        assert code == 2 and "cannot reach the Ray Jobs API" in err, (job, err)


def test_a_hung_dashboard_times_out_as_jobs_unavailable(ray_head):
    """A server that accepts connections and never answers (a hung dashboard) must not hang the
    caller: each request has a timeout, and a head that stops answering is JobsUnavailable."""
    import socket
    import time

    from services.jobs import JobsUnavailable, RaynasJobs

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # accepted by the kernel, never read
        started = time.time()
        with pytest.raises(JobsError, match="cannot reach the Ray Jobs API"):
            RaynasJobs(f"http://127.0.0.1:{hung.getsockname()[1]}", timeout_s=(1.0, 1.0))
        assert time.time() - started < 10
        jobs = RaynasJobs(ray_head.jobs_url, timeout_s=(1.0, 1.0))
        jobs.client._address = f"http://127.0.0.1:{hung.getsockname()[1]}"  # the same head, now hung
        started = time.time()
        with pytest.raises(JobsUnavailable, match="lost the Jobs API"):
            jobs.list()
        assert time.time() - started < 10
    with pytest.raises(JobsUnavailable):  # and gone altogether: requests' ConnectionError
        jobs.ping()


def test_submit_tabular_and_weight_sharing_searches(ray_head, tmp_path, capsys, arrays_dir):
    from tests.test_weight_sharing import tiny_config

    url = ray_head.jobs_url
    table = tmp_path / "table.json"
    table.write_text(json.dumps(nb201_landscape(0)))
    ws_cfg = to_dict(tiny_config(tmp_path / "ws", **{"data.source": "arrays", "data.data_dir": str(arrays_dir)}))
    (tmp_path / "ws.yaml").write_text(yaml.safe_dump(ws_cfg))

    # Submitted without waiting, then followed: both run on the head at once.
    code, out, err = run_cli(capsys, "submit", "--address", url, "--", "raynas", "search", "--space", "nb201",
                             "--evaluator", "table", "--table", str(table), "--reward-key", "valid",
                             "--budget", "16", "--out", str(tmp_path / "tab"))
    assert code == 0, err
    tab_id = out.split("submitted job ")[1].split()[0]
    code, out, err = run_cli(capsys, "submit", "--address", url, "--follow", "--",
                             "raynas", "search", "--config", str(tmp_path / "ws.yaml"))
    assert code == 0, out + err
    ws_id = out.split("submitted job ")[1].split()[0]
    assert "[raynas] found  " in out and "[raynas] next   raynas retrain " in out and "SUCCEEDED" in out
    assert "[raynas] deriving: " in out and "each scored on the whole validation split" in out
    assert json.loads((tmp_path / "ws" / "best_arch.json").read_text())["arch"]
    assert (tmp_path / "ws" / "best_arch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the picture

    code, out, err = run_cli(capsys, "jobs", "logs", tab_id, "--follow", "--address", url)
    assert code == 0 and f"job {tab_id} SUCCEEDED" in out
    summary = json.loads((tmp_path / "tab" / "summary.json").read_text())
    assert summary["evaluated"] == 16 and len((tmp_path / "tab" / "trajectory.jsonl").read_text().splitlines()) == 16

    code, out, _ = run_cli(capsys, "jobs", "status", tab_id, "--address", url)
    assert code == 0 and out.startswith(f"{tab_id} SUCCEEDED")
    code, out, _ = run_cli(capsys, "jobs", "list", "--address", url)
    ours = [line for line in out.splitlines() if line.split()[0] in (tab_id, ws_id)]  # the head is shared
    assert code == 0 and len(ours) == 2 and all(line.split()[1] == "SUCCEEDED" for line in ours), out
    code, out, _ = run_cli(capsys, "jobs", "logs", tab_id, "--address", url)
    assert "[raynas] found  " in out

    # A failing job: the error comes back, the exit code says so.
    code, out, _ = run_cli(capsys, "submit", "--address", url, "--follow", "--", "raynas", "search",
                           "--config", str(tmp_path / "missing.yaml"))
    assert code == 1 and "FAILED" in out and "missing.yaml" in out

    for action in ("status", "logs", "stop"):
        code, _, err = run_cli(capsys, "jobs", action, "raysubmit_nosuchjob", "--address", url)
        assert code == 2 and "no job 'raysubmit_nosuchjob'" in err, (action, err)


def test_submit_a_retrain(ray_head, tmp_path, capsys):
    """`raynas submit -- raynas retrain …` (as the README shows): the job trains, its progress and
    closing lines come back in the followed log, and the model lands in --out."""
    from tests.test_retrain import TINY, arch_file

    path, space, arch = arch_file(tmp_path)
    config = {"space": {"name": "enas_macro", "params": {"num_layers": 3}}, "supernet": TINY["supernet"],
              "data": TINY["data"], "train": {"epochs": 2}}
    (tmp_path / "retrain.yaml").write_text(yaml.safe_dump(config))
    code, out, err = run_cli(capsys, "submit", "--address", ray_head.jobs_url, "--working-dir", str(tmp_path),
                             "--follow", "--", "raynas", "retrain", str(path), "--config", "retrain.yaml",
                             "--out", str(tmp_path / "out"))
    assert code == 0, out[-3000:] + err
    assert "[raynas] retrain epoch 2/2 " in out and f"[raynas] found  {space.to_string(arch)} (enas_macro)" in out
    assert "Reporting training result" not in out and "SUCCEEDED" in out
    assert (tmp_path / "out" / "model.pt").is_file()


def test_stop_a_running_job(ray_head, tmp_path, capsys):
    url = ray_head.jobs_url
    table = tmp_path / "table.json"
    table.write_text(json.dumps(nb201_landscape(1)))
    search = ["search", "--space", "nb201", "--evaluator", "table", "--table", str(table), "--budget", "100000",
              "--out", str(tmp_path / "long")]
    code, out, _ = run_cli(capsys, "submit", "--address", url, "--job-id", "raynas-stop-me", "--", *search)
    assert code == 0 and "raynas-stop-me" in out
    code, out, _ = run_cli(capsys, "jobs", "stop", "raynas-stop-me", "--address", url)
    assert code == 0 and "stopping" in out
    code, out, _ = run_cli(capsys, "jobs", "logs", "raynas-stop-me", "--follow", "--address", url)
    assert code == 1 and "STOPPED" in out
    code, _, err = run_cli(capsys, "submit", "--address", url, "--job-id", "raynas-stop-me", "--", *search)
    assert code == 2 and "job id 'raynas-stop-me' is already taken" in err


def test_ctrl_c_while_following_a_submitted_job_leaves_it_running(ray_head, tmp_path, capsys):
    from tests.test_interrupts import Command

    url = ray_head.jobs_url
    table = tmp_path / "table.json"
    table.write_text(json.dumps(nb201_landscape(1)))
    command = Command("submit", "--address", url, "--job-id", "raynas-followed", "--follow", "--", "search", "--space",
                      "nb201", "--evaluator", "table", "--table", str(table), "--budget", "100000", "--out",
                      str(tmp_path / "long"))
    command.wait_for_line("[raynas] submitted job raynas-followed")
    command.interrupt()
    code, out, err = command.finish()
    assert code == 130, err
    assert err == (f"raynas: interrupted; job raynas-followed goes on; follow it with: raynas jobs logs raynas-followed "
                   f"--follow --address {url} (stop it with: raynas jobs stop raynas-followed --address {url})\n"), err
    code, out, _ = run_cli(capsys, "jobs", "status", "raynas-followed", "--address", url)
    assert code == 0 and out.split()[1].rstrip(":") in ("PENDING", "RUNNING"), out
    code, out, _ = run_cli(capsys, "jobs", "stop", "raynas-followed", "--address", url)
    assert code == 0 and "stopping" in out
