#!/usr/bin/env python3
"""Speaker identification from pooled log-mel statistics with an MLP, tunable through hpopt.

    python recipes/speaker_mlp/train.py recipes/speaker_mlp/train.yaml --data_folder DIR \\
        --output_folder OUT [--hidden_units N --hidden_layers N --learning_rate X ...] \\
        [--hpopt recipes/speaker_mlp/hpopt.yaml --hpopt_mode orion]

A second, deliberately different recipe on the prepared folder of the speaker-id recipe (its
`speaker_mlp_prepare.py` and `speaker_data` are symlinks to that recipe's, as SpeechBrain's
recipes share their `*_prepare.py`): each utterance becomes the mean and standard deviation of
its log-mel frames, and a full-batch MLP classifies the speaker. It reports `error_rate` (the
objective) and `nll` to hpopt, and writes OUT/metrics.json in the workflow's result contract.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from hyperpyyaml import load_hyperpyyaml
from speaker_data.errors import DataError
from speaker_data.prepared import PreparedData, open_prepared

import hpopt as hp
from hpopt.files import write_json_atomically


def pooled(prepared: PreparedData, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(utterances x 2*n_mels statistics, speaker labels) of one split."""
    index = prepared.split(split)
    frames = np.load(prepared.features_dir / f"{split}.npy", mmap_mode="r")
    rows = [
        np.concatenate([chunk.mean(axis=0), chunk.std(axis=0)])
        for chunk in (frames[o : o + n] for o, n in zip(index.offsets, index.frames, strict=True))
    ]
    labels = [prepared.labels[spk] for spk in index.spk_ids]
    return torch.tensor(np.stack(rows), dtype=torch.float32), torch.tensor(labels)


def build_model(hparams: dict, n_inputs: int, n_classes: int) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    width = n_inputs
    for _ in range(hparams["hidden_layers"]):
        layers += [
            torch.nn.Linear(width, hparams["hidden_units"]),
            torch.nn.ReLU(),
            torch.nn.Dropout(hparams["dropout_rate"]),
        ]
        width = hparams["hidden_units"]
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, n_classes))


def evaluate(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> dict:
    model.eval()
    with torch.no_grad():
        logits = model(inputs)
    return {
        "error_rate": float((logits.argmax(dim=1) != labels).float().mean()),
        "nll": float(torch.nn.functional.cross_entropy(logits, labels)),
    }


def main(argv: list[str]) -> int:
    with hp.hyperparameter_optimization(objective_key="error_rate") as hp_ctx:
        hparams_file, run_opts, overrides = hp_ctx.parse_arguments(argv)
        with open(hparams_file, encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin, overrides)
        torch.set_num_threads(hparams["num_threads"])
        torch.use_deterministic_algorithms(True)
        torch.manual_seed(hparams["seed"])
        try:
            prepared = open_prepared(Path(hparams["data_folder"]), hparams["n_mels"])
        except DataError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        splits = {name: pooled(prepared, name) for name in ("train", "valid", "test")}
        mean, std = splits["train"][0].mean(dim=0), splits["train"][0].std(dim=0) + 1e-5
        splits = {name: ((x - mean) / std, y) for name, (x, y) in splits.items()}
        model = build_model(hparams, splits["train"][0].shape[1], len(prepared.labels))
        # fused: its arithmetic is the same on every x86-64 CPU; the default (foreach) update's
        # float32 sqrt is not (`make numerics-check` named it; speaker_data.portable_math).
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=hparams["learning_rate"],
            weight_decay=hparams["weight_decay"],
            fused=True,
        )
        inputs, labels = splits["train"]
        for _ in range(hparams["steps"]):
            model.train()
            loss = torch.nn.functional.cross_entropy(model(inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        metrics = {"valid": evaluate(model, *splits["valid"])}
        hp.report_result(metrics["valid"])
        if not hp_ctx.enabled:
            metrics["test"] = evaluate(model, *splits["test"])
        output = Path(hparams["output_folder"])
        output.mkdir(parents=True, exist_ok=True)
        result = {
            "result_format": 1,
            "objective": {"split": "valid", "metric": "error_rate"},
            "metrics": metrics,
            "params": {key: hparams[key] for key in ("hidden_units", "hidden_layers", "steps")},
        }
        write_json_atomically(output / "metrics.json", result, indent=2)
        print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
