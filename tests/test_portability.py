"""The second kernel setting of the test command really changes results, and the metrics the
book reports do not move with it beyond their reported digits.

Each setting runs in its own process: PyTorch and MKL read their kernel settings once, at start-up.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels import other_kernels

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import hashlib, json, torch
from cxvae.config import model_preset
from cxvae.data import generate_exam_scores
from cxvae.evaluation import ModelScorer
from cxvae.metrics import ProbeConfig, u_probe_mse, v_probe_mse
from cxvae.model import GroupVAE
torch.set_num_threads(1)
torch.manual_seed(0)
data = generate_exam_scores(640, seed=4)
train, test = data.subset(slice(0, 512)), data.subset(slice(512, 640))
model = GroupVAE(model_preset("cxvae"))
(u_tr, v_tr), (u_te, v_te) = ModelScorer(model).codes(train), ModelScorer(model).codes(test)
probe = ProbeConfig(max_train=512)
bits = hashlib.md5(torch.cat([u_tr.flatten(), v_tr.flatten()]).numpy().tobytes()).hexdigest()
print("RESULT", json.dumps(dict(
    capability=torch.backends.cpu.get_cpu_capability(), code_bits=bits,
    v_probe=v_probe_mse(v_tr, train.mask, train.u, v_te, test.mask, test.u, probe),
    u_probe=u_probe_mse(u_tr, train.u, u_te, test.u, probe))))
"""


def _run(extra_env: dict) -> dict:
    drop = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in drop} | extra_env
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=300)
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])


@pytest.fixture(scope="module")
def both():
    return _run({}), _run(other_kernels())


def test_the_second_setting_changes_the_kernels_and_the_bits_of_a_models_codes(both):
    """A setting that changed nothing would prove nothing: under the second setting the same
    seeded model computes other float32 bits for the same codes."""
    native, other = both
    assert other["capability"] != native["capability"]
    assert other["code_bits"] != native["code_bits"]


def test_probe_scores_agree_across_kernel_settings_beyond_the_reported_digits(both):
    """The closed-form v-probe agrees to far better than the 4 digits the book stores (its float64
    solve only sees the codes' float32 rounding, ~1e-7 relative). The u-probe is a trained MLP
    (400 Adam steps), whose rounding is amplified by training, not bounded: its spread is
    measured (1.4e-3 relative here, at most 1.2e-3 on the committed models in
    results/paper/kernel_spread.csv), so it is asserted at 3 significant digits, as the book
    prints it, with a tolerance of 3e-3."""
    native, other = both
    assert other["v_probe"] == pytest.approx(native["v_probe"], rel=1e-5)
    assert other["u_probe"] == pytest.approx(native["u_probe"], rel=3e-3)
