"""The encoders' training and scoring path is backend-neutral: it runs under JAX as under TensorFlow.

TensorFlow is the product's default backend; a GPU worker may run the same code on JAX (or
PyTorch) instead. Keras fixes its backend at import, so the checks run again in a child
pytest with KERAS_BACKEND=jax (on the CPU): the hand-worked values (the one-weight early
stopping, the losses) must come out the same, and the tiny encoders must learn the rules
they learn under TensorFlow. The child cannot import TensorFlow at all, as on a GPU machine
with a JAX image: any tf.* that creeps into the training or model code fails it.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Hand-worked values first, then a GRU, a SASRec and the item tower trained end to end.
CHECKS = (
    "tests/train/test_training.py",
    "tests/train/test_train_user_encoder.py::test_full_softmax_loss_by_hand",
    "tests/train/test_train_user_encoder.py::test_sampled_softmax_loss_by_hand_with_logq_correction_and_an_accidental_hit",
    "tests/train/test_train_user_encoder.py::test_gru_learns_the_successor_rule_that_popularity_cannot",
    "tests/train/test_train_user_encoder.py::test_sampled_softmax_learns_the_successor_rule_and_reports_the_full_softmax_val_loss",
    "tests/train/test_repeat_head.py::test_keras_mixture_matches_by_hand_and_its_cross_entropy_is_minus_log_p",
    "tests/train/test_repeat_head.py::test_sampled_softmax_with_a_repeat_head_mixes_the_targets_probability",
    "tests/train/test_repeat_head.py::test_scorer_gives_the_training_models_log_probabilities_and_survives_saving",
    "tests/train/test_sasrec.py::test_sasrec_learns_the_successor_rule",
    "tests/train/test_sasrec.py::test_saved_sasrec_reloads_and_scores_identically",
    "tests/train/test_train_item_encoder.py::test_info_nce_by_hand_on_a_2x2_batch",
    "tests/train/test_train_item_encoder.py::test_cold_item_lands_beside_its_twin_and_its_group",
)


# The child: pytest with every import of tensorflow refused.
WITHOUT_TENSORFLOW = """
import sys
import importlib.abc


class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"{name}: TensorFlow is not installed here (a JAX-only machine)")
        return None


sys.meta_path.insert(0, NoTensorFlow())
import pytest

sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-o", "addopts=", *sys.argv[1:]]))
"""


def test_the_encoders_train_under_jax_with_the_hand_worked_results_of_tensorflow():
    environment = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    child = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, *CHECKS], cwd=REPO, env=environment,
                           capture_output=True, text=True, timeout=900)
    assert child.returncode == 0, f"under KERAS_BACKEND=jax:\n{child.stdout[-4000:]}\n{child.stderr[-2000:]}"
    assert " passed" in child.stdout and "skipped" not in child.stdout, child.stdout[-1000:]
