"""POS tagging: CoNLL-2003's POS column, word accuracy counted once per word, the recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from framework.errors import UserError
from tasks.pos import POS, WordAccuracy
from tests.conftest import compose

CONLL = Path(__file__).resolve().parents[3] / "shared" / "data" / "conll2003"


@pytest.mark.skipif(not CONLL.is_dir(), reason="needs ../shared/data/conll2003")
def test_reads_the_pos_column_and_learns_the_tag_set():
    task = POS()
    rows = task.read_file(CONLL / "valid.txt")
    # the dev split's first words: CRICKET NNP, - :, LEICESTERSHIRE NNP
    assert rows["tokens"][0][:3] == ["CRICKET", "-", "LEICESTERSHIRE"]
    assert rows["tags"][0][:3] == ["NNP", ":", "NNP"]
    task.setup([rows])
    assert task.labels == sorted(task.labels) and {"NNP", "VBD", "."} <= set(task.labels)
    assert "O" not in task.labels and not any(t.startswith("B-") for t in task.labels)


def test_word_accuracy_counts_each_word_once_from_its_most_central_window():
    metric = WordAccuracy()
    # (row, word, centrality, predicted id); gold per sub-token. Row 0 word 1 is seen in two
    # windows: the central copy (centrality 5, right) wins over the edge one (0, wrong).
    preds = torch.tensor([[0, 0, 3, 1], [0, 1, 0, 7], [0, 1, 5, 2], [1, 0, 2, 4]])
    gold = torch.tensor([1, 2, 2, 3])
    metric.update(preds, gold)
    assert metric.compute().item() == pytest.approx(2 / 3)  # 3 words, row 1's is wrong


def test_an_unseen_tag_is_a_one_line_error():
    task = POS()
    task.setup([{"tokens": [["a", "b"]], "tags": [["DT", "NN"]]}])
    with pytest.raises(UserError, match="tag 'VB' is not in the label set") as e:
        task._tag_ids(["DT", "VB"])
    assert "\n" not in str(e.value)


def test_the_recipe_composes_the_pos_task_on_conll2003():
    cfg = compose("experiment=conll2003_pos", "paths.output_dir=/tmp/x")
    assert (cfg.task.name, cfg.task.tag_field, cfg.task.monitor) == ("pos", 1, "val/acc")
    assert cfg.data.train_file == "train.txt" and cfg.trainer.max_epochs == 1
