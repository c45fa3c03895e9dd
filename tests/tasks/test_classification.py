"""The classification task's figures scale with the label set."""

from __future__ import annotations

from tasks.classification import MAX_DRAWN, Classification


def test_the_confusion_matrix_is_drawn_up_to_max_drawn_classes():
    few = Classification(labels=[f"c{i}" for i in range(MAX_DRAWN)])
    assert list(few.figures()) == ["confusion_matrix"]
    # 320 classes took 220 s to draw, 10,000 took over 10 minutes and 15 GB: not drawn at all
    many = Classification(labels=[f"c{i}" for i in range(MAX_DRAWN + 1)])
    assert many.figures() == {}
