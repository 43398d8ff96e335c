"""`raynas report` against a hand-made experiment directory with known numbers."""
import json

import pytest

from services.experiments.report import report_at, write_report

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
    # ranked by the test metric of each seed's best-by-valid architecture: ppo 0.85, 0.85; random 0.45, 0.80;
    # paired differences 0.4 and 0.05 over 2 seeds: t = 1.29, p = 0.42 -> within noise
    assert md.splitlines()[2] == (
        "Ranked by the test metric of the best-by-validation architecture (mean ± std over seeds): "
        "ppo 0.85 ± 0, random 0.625 ± 0.17. ppo vs random: +0.225, within noise (paired t-test over 2 seeds, "
        "p = 0.42). "
        "ppo reached 99% of the best reward (0.9) after 2.5 ± 0.5 architectures (2/2 seeds), final best 0.9 ± 0; "
        "random reached 99% of the best reward (0.9) in none of its 2 seeds, final best 0.675 ± 0.17.")
    html = (experiment / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "id='verdict'" in html
    assert (experiment / "reward_curves.png").stat().st_size > 1000


def test_weight_sharing_trials_are_ranked_by_their_derived_architecture(tmp_path):
    """The one-minibatch rewards (here: random's are higher) rank nothing; the derived
    architectures' full-validation accuracies do, with the noise stated."""
    derived = {"ppo": [0.70, 0.72, 0.71], "reinforce": [0.69, 0.74, 0.70], "random": [0.60, 0.61, 0.62]}
    for i, (algo, accs) in enumerate(derived.items()):
        for seed, acc in enumerate(accs):
            trial = tmp_path / f"search_trial_{i}_{seed}"
            trial.mkdir()
            (trial / "params.json").write_text(json.dumps({"algo": algo, "seed": seed, "search": {}}))
            noisy = 0.9 if algo == "random" else 0.5
            (trial / "trajectory.jsonl").write_text("".join(
                json.dumps({"sample": k, "arch": f"a{k}", "reward": noisy, "metrics": {"valid_acc": noisy}}) + "\n"
                for k in range(4)))
            (trial / "best_arch.json").write_text(json.dumps({"arch": "a0", "valid_accuracy": acc}))
            if algo != "random":  # the last epoch's policy health (reinforce's froze)
                (trial / "metrics.csv").write_text("epoch,controller_entropy,controller_exactly_saturated\n"
                                                   f"4,3.0,{0.9 if algo == 'reinforce' else 0.0}\n")
    md = write_report(tmp_path, window=2).read_text()
    verdict = md.splitlines()[2]
    assert verdict.startswith("Ranked by the derived architecture's accuracy on the whole validation split "
                              "(mean ± std over seeds): ppo 0.71 ± 0.0082, reinforce 0.71 ± 0.022, random 0.61 ± 0.0082.")
    assert "within noise (paired t-test over 3 seeds" in verdict.split("ppo vs random")[0]
    assert "ppo vs random: +0.1, ppo better (paired t-test over 3 seeds, p = 0" in verdict
    header = next(line for line in md.splitlines() if line.startswith("| algorithm"))
    assert "derived architecture: valid accuracy (whole split)" in header and "final best" not in header
    assert "final logits at exactly ±1 (a frozen policy)" in header
    rows = {line.split(" | ")[0][2:]: line.rstrip(" |").split(" | ") for line in md.splitlines() if line.startswith("| ")}
    assert rows["reinforce"][4] == "0.9 ± 0" and rows["ppo"][4] == "0 ± 0" and rows["random"][4].startswith("n/a")


def test_the_best_architecture_and_a_uri_experiment_ranked_like_a_local_one(tmp_path, experiment):
    """report_at names the architecture a user keeps; an experiment at a URI is fetched with its
    best_arch.json files, so weight-sharing trials there are ranked by their derived architectures."""
    local = report_at(experiment, window=2)
    # by the test metric of each best-by-valid architecture: ppo's (0.85) in both seeds, seed 0 first
    assert local.best == {"arch": "a2", "score": pytest.approx(0.85), "algo": "ppo", "seed": 0,
                          "criterion": "the test metric of the best-by-validation architecture",
                          "trial": "search_trial_0"}
    for i, acc in enumerate((0.61, 0.74, 0.70, 0.69)):
        (experiment / f"search_trial_{i}" / "best_arch.json").write_text(json.dumps({"arch": f"d{i}",
                                                                                    "valid_accuracy": acc}))
    remote = report_at(experiment.as_uri(), window=2)
    assert remote.location == experiment.as_uri() + "/report.md"
    assert remote.ranking.startswith("Ranked by the derived architecture's accuracy on the whole validation split")
    assert (remote.best["arch"], remote.best["algo"], remote.best["seed"]) == ("d1", "ppo", 1)


def test_one_seed_gives_no_verdict(experiment):
    """With one seed per algorithm there is no spread: a margin is reported, never "better"."""
    for i in (1, 3):  # keep seed 0 of each algorithm
        for f in (experiment / f"search_trial_{i}").iterdir():
            f.unlink()
        (experiment / f"search_trial_{i}").rmdir()
    text = report_at(experiment, window=2).ranking
    assert "ppo vs random: +0.4, no verdict (one seed: the noise is unknown; run several seeds)." in text
    assert "better" not in text


def test_report_on_a_directory_without_trials(tmp_path):
    with pytest.raises(ValueError, match="holds no trials"):
        write_report(tmp_path)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000"]
# Appended to a copy of the report: after load, what the browser made of the page goes into the DOM.
PROBE = """<script>window.addEventListener('load', () => {
  const out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]),
    rows: [...document.querySelectorAll('table tr')].map(r => [...r.cells].map(c => c.textContent)),
    verdict: document.getElementById('verdict').textContent,
    fetched: performance.getEntriesByType('resource').map(e => e.name)});
  document.body.appendChild(out);
});</script>"""


def chromium():
    import os
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("RAYNAS_REQUIRE_CHROMIUM"):  # .ci/run installs it and sets this
            pytest.fail("RAYNAS_REQUIRE_CHROMIUM is set but no chromium is on PATH")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    return path


def probe_in_chromium(browser: str, report_html, tmp_path) -> dict:
    """What headless chromium made of a report: its images, table rows, verdict and fetches."""
    import html as html_lib
    import re
    import subprocess

    page = tmp_path / "probe.html"
    page.write_text(report_html.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert match, dom.stderr[-2000:]
    return json.loads(html_lib.unescape(match.group(1)))


def test_report_html_renders_in_headless_chromium(experiment, tmp_path):
    import subprocess

    browser = chromium()
    write_report(experiment, window=2)
    seen = probe_in_chromium(browser, experiment / "report.html", tmp_path)
    # Both plots decoded from the embedded data (a broken image has naturalWidth 0).
    assert [i[0] for i in seen["images"]] == ["reward_curves", "best_curves"]
    assert all(complete and w > 300 and h > 200 for _, complete, w, h in seen["images"]), seen["images"]
    assert seen["fetched"] == []  # self-contained: nothing loaded from anywhere
    assert seen["rows"][0][0] == "algorithm" and [r[0] for r in seen["rows"][1:]] == ["ppo", "random"]
    # The same verdict line as the Markdown report's (pinned in test_report_numbers_and_files).
    assert seen["verdict"] == (experiment / "report.md").read_text().splitlines()[2]

    shot = tmp_path / "report.png"
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}",
                    "--window-size=1200,1600", (experiment / "report.html").as_uri()], capture_output=True, timeout=120)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1600, 1200) and pixels.std() > 0.05  # something was drawn, not a blank page


def test_the_curves_say_what_their_axes_and_band_are(experiment, monkeypatch):
    from matplotlib.figure import Figure

    drawn, savefig = [], Figure.savefig

    def recording(fig, path, **kw):
        drawn.append((fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel(), fig.axes[0].get_title()))
        savefig(fig, path, **kw)

    monkeypatch.setattr(Figure, "savefig", recording)
    write_report(experiment, window=2)
    assert drawn and all(x == "architectures evaluated" and y == "reward (mean over seeds)" for x, y, _ in drawn)
    assert all(title.endswith("band: ± 1 std over seeds") for _, _, title in drawn)


def test_pareto_front_by_hand():
    from services.experiments.report import pareto_front

    points = [(3.0, 0.9), (1.0, 0.5), (2.0, 0.4), (2.0, 0.7), (4.0, 0.8), (1.0, 0.3)]
    assert pareto_front(points) == [(1.0, 0.5), (2.0, 0.7), (3.0, 0.9)]


@pytest.fixture
def constrained_experiment(tmp_path):
    """Two algorithms x two seeds searched under a hard FLOPs target of 50 and a soft params one."""
    rng = __import__("numpy").random.default_rng(0)
    search = {"objective": {"constraints": {"flops_m": {"target": 50.0, "mode": "hard", "weight": -0.07},
                                            "params_m": {"target": 1.0, "mode": "soft", "weight": -0.07}}}}
    for i, (algo, seed) in enumerate([("ppo", 0), ("ppo", 1), ("random", 0), ("random", 1)]):
        trial = tmp_path / f"search_trial_{i}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps({"algo": algo, "seed": seed, "search": search}))
        rows = []
        for k in range(30):
            flops, acc = float(rng.uniform(10, 100)), float(rng.uniform(0.5, 0.9))
            rows.append({"sample": k, "arch": f"a{k}", "reward": acc if flops <= 50 else 0.0, "measured": acc,
                         "metrics": {"valid": acc}, "costs": {"flops_m": flops, "params_m": flops / 50},
                         "feasible": flops <= 50})
        (trial / "trajectory.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_a_constrained_experiment_gets_pareto_plots_in_chromium(constrained_experiment, tmp_path):
    md = write_report(constrained_experiment, window=5).read_text()
    header = next(line for line in md.splitlines() if line.startswith("| algorithm"))
    assert header.endswith("| best measured within the hard targets |")
    for algo, trials in (("ppo", (0, 1)), ("random", (2, 3))):
        best = []
        for i in trials:
            rows = [json.loads(line) for line in
                    (constrained_experiment / f"search_trial_{i}" / "trajectory.jsonl").read_text().splitlines()]
            best.append(max(r["measured"] for r in rows if r["feasible"]))
        line = next(line for line in md.splitlines() if line.startswith(f"| {algo} "))
        mean, std = sum(best) / 2, abs(best[0] - best[1]) / 2
        assert line.endswith(f"| {mean:.4g} ± {std:.2g} (2/2 seeds found one) |"), line
    assert "![pareto flops m](pareto_flops_m.png)" in md and "![pareto params m](pareto_params_m.png)" in md

    seen = probe_in_chromium(chromium(), constrained_experiment / "report.html", tmp_path)
    assert [i[0] for i in seen["images"]] == ["reward_curves", "best_curves", "pareto_flops_m", "pareto_params_m"]
    assert all(complete and w > 300 and h > 200 for _, complete, w, h in seen["images"]), seen["images"]
    assert seen["rows"][0][-1] == "best measured within the hard targets"
