#!/usr/bin/env python3
"""Speaker identification in SpeechBrain's own idiom, ready for hyperparameter search.

The command line and YAML keys are those of SpeechBrain's
``templates/hyperparameter_optimization_speaker_id``, so that any tool that drives that
template (``speechbrain.utils.hpopt`` reporters, Orion, the reprohunt workflow) can drive this
recipe too. What differs: SpeechBrain's x-vector lobes replace the template's custom model, a
dropout on the embeddings gives a search one more knob, data preparation never downloads (see
``speaker_id_sb_prepare.py``), and the default sizes fit a small CPU machine.

Usage::

    python train.py train.yaml --data_folder DIR [--NOISE_DATASET_URL noise.zip] [overrides]
    python train.py train.yaml --data_folder DIR --hpopt hpopt.yaml --hpopt_mode generic

With ``--hpopt`` the run is one trial: the validation error of the last epoch is reported as
the objective and the test set is left untouched (it must not leak into model selection).

The file reads top to bottom: the Brain subclass (what happens to a batch and at the end of
each stage), then the data pipeline, then the main block that wires them together.

Authors
 * reprohunt contributors
"""

import os
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speaker_id_sb_prepare import prepare_speaker_id
from speechbrain.utils import hpopt as hp


class SpeakerIdBrain(sb.Brain):
    """Trains an x-vector network to classify utterances by speaker.

    Waveforms are augmented (training only), turned into normalised filterbanks, embedded by
    the TDNN x-vector model and classified; the loss is the NLL of the log-posteriors and the
    evaluation metric the classification error.
    """

    def compute_forward(self, batch, stage):
        """Maps a batch of waveforms to log-posteriors over the speakers.

        Arguments
        ---------
        batch : speechbrain.dataio.batch.PaddedBatch
            Holds ``sig`` (padded waveforms and relative lengths) among other keys.
        stage : sb.Stage
            TRAIN, VALID or TEST; augmentation only happens in TRAIN.

        Returns
        -------
        torch.Tensor
            Log-posteriors, shape ``[batch, 1, n_classes]``; during training the batch holds
            the clean and the augmented copies of each utterance.
        """
        batch = batch.to(self.device)
        wavs, lens = batch.sig

        if stage == sb.Stage.TRAIN:
            wavs, lens = self.hparams.wav_augment(wavs, lens)

        feats = self.modules.compute_features(wavs)
        # Per-utterance mean removal: makes the features insensitive to channel/gain offsets.
        feats = self.modules.mean_var_norm(feats, lens)

        embeddings = self.modules.embedding_model(feats, lens)
        # Dropout acts here, on the embeddings the classifier sees; the Brain puts the module
        # in eval() mode outside training, so validation and test are unaffected.
        embeddings = self.modules.embedding_dropout(embeddings)
        return self.modules.classifier(embeddings)

    def compute_objectives(self, predictions, batch, stage):
        """Computes the NLL loss and accumulates the stage's statistics.

        Arguments
        ---------
        predictions : torch.Tensor
            Output of ``compute_forward``.
        batch : speechbrain.dataio.batch.PaddedBatch
            The batch the predictions were made from (labels in ``spk_id_encoded``).
        stage : sb.Stage
            TRAIN, VALID or TEST.

        Returns
        -------
        torch.Tensor
            The scalar loss to back-propagate.
        """
        _, lens = batch.sig
        spk_ids, _ = batch.spk_id_encoded

        # The augmenter grew the batch (clean + corrupted copies); the labels and lengths must
        # be repeated the same way so that each prediction meets its own target.
        if stage == sb.Stage.TRAIN:
            spk_ids = self.hparams.wav_augment.replicate_labels(spk_ids)
            lens = self.hparams.wav_augment.replicate_labels(lens)

        loss = sb.nnet.losses.nll_loss(predictions, spk_ids, lens)

        self.loss_metric.append(batch.id, predictions, spk_ids, lens, reduction="batch")
        if stage != sb.Stage.TRAIN:
            self.error_metrics.append(batch.id, predictions, spk_ids, lens)

        return loss

    def on_stage_start(self, stage, epoch=None):
        """Starts fresh statistics trackers for the stage.

        Arguments
        ---------
        stage : sb.Stage
            TRAIN, VALID or TEST.
        epoch : int, optional
            The epoch about to run (None at test time).
        """
        self.loss_metric = sb.utils.metric_stats.MetricStats(metric=sb.nnet.losses.nll_loss)
        if stage != sb.Stage.TRAIN:
            self.error_metrics = self.hparams.error_stats()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the stage's statistics; after validation also anneals, saves and reports.

        The order after validation matters: the learning rate logged is the one the epoch was
        trained with, the checkpoint keeps only the lowest-error epoch (what ``evaluate`` with
        ``min_key="error"`` loads), and ``hp.report_result`` hands the same statistics to the
        hyperparameter search, whose objective key is ``error``.

        Arguments
        ---------
        stage : sb.Stage
            TRAIN, VALID or TEST.
        stage_loss : float
            Mean loss over the stage.
        epoch : int, optional
            The epoch that just ran (None at test time).
        """
        if stage == sb.Stage.TRAIN:
            # Kept until validation, which logs train and valid statistics on one line.
            self.train_loss = stage_loss
            return

        stats = {"loss": stage_loss, "error": self.error_metrics.summarize("average")}

        if stage == sb.Stage.VALID:
            old_lr, new_lr = self.hparams.lr_annealing(epoch)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            self.hparams.train_logger.log_stats(
                {"Epoch": epoch, "lr": old_lr},
                train_stats={"loss": self.train_loss},
                valid_stats=stats,
            )
            if self.hparams.ckpt_enable:
                self.checkpointer.save_and_keep_only(meta=stats, min_keys=["error"])
            hp.report_result(stats)

        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                {"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )


def dataio_prep(hparams):
    """Builds the train/valid/test datasets from the JSON manifests.

    Each item yields its waveform (``sig``) and its speaker label, both as text and as an index
    (``spk_id_encoded``). The label encoder is built from the training set once and saved in
    ``save_folder``, so that a resumed run, or evaluation alone, uses the same speaker-to-index
    mapping.

    Arguments
    ---------
    hparams : dict
        The loaded train.yaml (with overrides).

    Returns
    -------
    dict
        ``{"train": ..., "valid": ..., "test": ...}`` of ``DynamicItemDataset``.
    """
    label_encoder = sb.dataio.encoder.CategoricalEncoder()

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        """Reads one utterance (in the data loader, on the CPU)."""
        return sb.dataio.dataio.read_audio(wav)

    @sb.utils.data_pipeline.takes("spk_id")
    @sb.utils.data_pipeline.provides("spk_id", "spk_id_encoded")
    def label_pipeline(spk_id):
        """Yields the speaker label and its integer index."""
        yield spk_id
        yield label_encoder.encode_label_torch(spk_id)

    manifests = {
        "train": hparams["train_annotation"],
        "valid": hparams["valid_annotation"],
        "test": hparams["test_annotation"],
    }
    datasets = {
        name: sb.dataio.dataset.DynamicItemDataset.from_json(
            json_path=path,
            replacements={"data_root": hparams["data_folder"]},
            dynamic_items=[audio_pipeline, label_pipeline],
            output_keys=["id", "sig", "spk_id_encoded"],
        )
        for name, path in manifests.items()
    }

    label_encoder.load_or_create(
        path=os.path.join(hparams["save_folder"], "label_encoder.txt"),
        from_didatasets=[datasets["train"]],
        output_key="spk_id",
    )

    # Batches in manifest order, as the template does: trials of a search then differ only
    # in their hyperparameters, never in the order the data came in.
    hparams["dataloader_options"]["shuffle"] = False
    return datasets


if __name__ == "__main__":
    # Everything runs inside the hpopt context: with --hpopt it collects the reported
    # statistics and prints/sends the objective when the block exits; without it, it is inert.
    with hp.hyperparameter_optimization(objective_key="error") as hp_ctx:
        # --hpopt FILE adds FILE's keys (e.g. ckpt_enable: False) to the overrides; the trial
        # id is not passed on, train.yaml declares its own.
        hparams_file, run_opts, overrides = hp_ctx.parse_arguments(
            sys.argv[1:], pass_trial_id=False
        )
        sb.utils.distributed.ddp_init_group(run_opts)

        with open(hparams_file, encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin, overrides)

        sb.create_experiment_directory(
            experiment_directory=hparams["output_folder"],
            hyperparams_to_save=hparams_file,
            overrides=overrides,
        )

        # Manifests (on the main process only; the others wait) and the noise list for
        # AddNoise. Preparation runs after load_hyperpyyaml, hence after seed_everything,
        # so the split depends on the seed only.
        if not hparams["skip_prep"]:
            sb.utils.distributed.run_on_main(
                prepare_speaker_id,
                kwargs={
                    "data_folder": hparams["data_folder"],
                    "save_json_train": hparams["train_annotation"],
                    "save_json_valid": hparams["valid_annotation"],
                    "save_json_test": hparams["test_annotation"],
                    "split_ratio": hparams["split_ratio"],
                },
            )
        sb.utils.distributed.run_on_main(hparams["prepare_noise_data"])

        datasets = dataio_prep(hparams)

        brain = SpeakerIdBrain(
            modules=hparams["modules"],
            opt_class=hparams["opt_class"],
            hparams=hparams,
            run_opts=run_opts,
            checkpointer=hparams["checkpointer"],
        )

        # fit() resumes from the latest checkpoint in save_folder if there is one.
        brain.fit(
            epoch_counter=brain.hparams.epoch_counter,
            train_set=datasets["train"],
            valid_set=datasets["valid"],
            train_loader_kwargs=hparams["dataloader_options"],
            valid_loader_kwargs=hparams["dataloader_options"],
        )

        # A search trial stops here: its result is the validation error reported above.
        if not hp_ctx.enabled:
            brain.evaluate(
                test_set=datasets["test"],
                min_key="error",
                test_loader_kwargs=hparams["dataloader_options"],
            )
