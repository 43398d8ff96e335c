"""`raynas report` against a hand-made experiment directory with known numbers."""
import json

import pytest

from services.report import write_report

TRIALS = {  # (algo, seed): rewards in evaluation order
    ("ppo", 0): [0.1, 0.5, 0.9, 0.9],
    ("ppo", 1): [0.2, 0.9, 0.9, 0.9],
    ("random", 0): [0.1, 0.1, 0.3, 0.5],
    ("random", 1): [0.1, 0.2, 0.85, 0.4],
}


@pytest.fixture
def experiment(tmp_path):
    for i, ((algo, seed), rewards) in enumerate(TRIALS.items()):
        trial = tmp_path / f"search_trial_{i}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps({"algo": algo, "seed": seed, "search": {}}))
        (trial / "trajectory.jsonl").write_text("".join(
            json.dumps({"sample": k, "arch": f"a{k}", "reward": r, "metrics": {"valid": r, "test": r - 0.05}}) + "\n"
            for k, r in enumerate(rewards)))
    return tmp_path


def test_report_numbers_and_files(experiment):
    md = write_report(experiment, window=2).read_text()
    ppo = next(line for line in md.splitlines() if line.startswith("| ppo"))
    rnd = next(line for line in md.splitlines() if line.startswith("| random"))
    # overall best 0.9: 90% = 0.81 -> ppo at samples 3 and 2 (2.5 ± 0.5), random only seed 1 at 3
    assert "| 0.9 ± 0 |" in ppo and "2.5 ± 0.5 (2/2)" in ppo
    assert "3 ± 0 (1/2)" in rnd and "n/a (0/2)" in rnd  # 0.85 < 0.855 (95%) and 0.891 (99%)
    assert "| 0.85 ± 0 |" in ppo  # test metric of each trial's best-by-reward architecture
    assert md.splitlines()[2] == (
        "ppo reached 99% of the best reward (0.9) after 2.5 ± 0.5 architectures (2/2 seeds), final best 0.9 ± 0; "
        "random reached 99% of the best reward (0.9) in none of its 2 seeds, final best 0.675 ± 0.17.")
    html = (experiment / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "id='verdict'" in html
    assert (experiment / "reward_curves.png").stat().st_size > 1000


def test_report_on_a_directory_without_trials(tmp_path):
    with pytest.raises(ValueError, match="holds no trials"):
        write_report(tmp_path)
