"""Evaluates the model that a training job left in its output.

The training job's output is mounted read-only at /model (PODDER_MOUNT_MODEL
when the job runs unsandboxed).
"""
import json
import math
import os
import sys

from train import make_data, sigmoid

MODEL_DIR = os.environ.get("PODDER_MOUNT_MODEL", "/model")
OUTPUT = os.environ.get("PODDER_OUTPUT", "/output")


def main():
    with open(os.path.join(MODEL_DIR, "model.json")) as f:
        model = json.load(f)
    w, b = model["w"], model["b"]
    test = make_data(1000, seed=2)
    correct = sum((sigmoid(w[0] * x[0] + w[1] * x[1] + b) >= 0.5) == (y == 1.0) for x, y in test)
    acc = correct / len(test)
    print(json.dumps({"test_acc": round(acc, 4)}))
    with open(os.path.join(OUTPUT, "eval.json"), "w") as f:
        json.dump({"test_acc": acc, "model_epochs": model["epochs"]}, f)
    if acc < 0.8:
        print(f"accuracy {acc:.3f} is below 0.8", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
