import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")
# the tests' many short trainings write no TensorBoard logs (tests/test_tensorboard.py turns them on)
os.environ.setdefault("SIMSUITE_TENSORBOARD_LOGS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
