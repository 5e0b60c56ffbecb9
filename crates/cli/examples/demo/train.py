"""Logistic regression on generated data, in plain Python.

Prints one JSON metrics line per epoch (podder records them) and saves the
model to the job's output directory.
"""
import json
import math
import os
import random

EPOCHS = int(os.environ.get("PODDER_PARAM_EPOCHS", "20"))
LR = float(os.environ.get("PODDER_PARAM_LR", "0.5"))
OUTPUT = os.environ.get("PODDER_OUTPUT", "/output")


def make_data(n, seed):
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        label = rng.random() < 0.5
        cx, cy = (1.5, 1.0) if label else (-1.0, -1.5)
        data.append(((rng.gauss(cx, 1.0), rng.gauss(cy, 1.0)), 1.0 if label else 0.0))
    return data


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))


def main():
    data = make_data(2000, seed=1)
    w, b = [0.0, 0.0], 0.0
    for epoch in range(1, EPOCHS + 1):
        gw, gb, loss, correct = [0.0, 0.0], 0.0, 0.0, 0
        for (x, y) in data:
            p = sigmoid(w[0] * x[0] + w[1] * x[1] + b)
            loss -= y * math.log(p + 1e-12) + (1 - y) * math.log(1 - p + 1e-12)
            correct += (p >= 0.5) == (y == 1.0)
            gw[0] += (p - y) * x[0]
            gw[1] += (p - y) * x[1]
            gb += p - y
        n = len(data)
        w = [w[0] - LR * gw[0] / n, w[1] - LR * gw[1] / n]
        b -= LR * gb / n
        print(json.dumps({"epoch": epoch, "loss": round(loss / n, 5), "acc": round(correct / n, 4)}))
    os.makedirs(OUTPUT, exist_ok=True)
    with open(os.path.join(OUTPUT, "model.json"), "w") as f:
        json.dump({"w": w, "b": b, "epochs": EPOCHS}, f)
    print(f"saved model to {OUTPUT}/model.json")


if __name__ == "__main__":
    main()
