"""hunt.start_with_train_yaml: which train.yaml values can be the hunt's first trial (the hunt
that inserts one runs in tests/test_workflow.py)."""

from __future__ import annotations

from pathlib import Path

from reprohunt.first_trial import train_yaml_point

SPACE = {
    "emb_dim": "choices([64, 128])",
    "lr": "loguniform(1e-4, 1e-2)",
    "number_of_epochs": "fidelity(5, 15, 3)",
}


def write_train_yaml(folder: Path, text: str) -> Path:
    path = folder / "train.yaml"
    path.write_text("seed: 1986\nnumber_of_epochs: 15\n" + text)
    return path


def test_plain_values_inside_the_priors_are_the_point_and_the_fidelity_is_its_top(
    tmp_path: Path,
) -> None:
    path = write_train_yaml(tmp_path, "emb_dim: 128\nlr: 0.003\n")
    point, description = train_yaml_point(path, SPACE)
    assert point == {"emb_dim": 128, "lr": 0.003, "number_of_epochs": 15}
    assert description == "train.yaml's values emb_dim=128, lr=0.003, number_of_epochs=15"


def test_a_value_outside_its_prior_or_an_expression_gives_no_point_and_says_which(
    tmp_path: Path,
) -> None:
    outside = write_train_yaml(tmp_path, "emb_dim: 256\nlr: 0.003\n")
    assert train_yaml_point(outside, SPACE) == (
        None,
        "train.yaml's emb_dim 256 lies outside hunt.space.emb_dim choices([64, 128])",
    )
    expression = write_train_yaml(tmp_path, "emb_dim: 128\nbase: 0.001\nlr: !ref <base> * 3\n")
    assert train_yaml_point(expression, SPACE) == (None, "train.yaml's lr is not a plain value")
