"""{{name}}: a podder task. Reads its parameters and inputs, writes /output."""

import json
import os
import pathlib


def param(name, kind, default):
    """Reads a parameter given with --param (podder passes them as PODDER_PARAM_<NAME>)."""
    return kind(os.environ.get("PODDER_PARAM_" + name.upper(), default))


def main():
    """Runs the task."""
    epochs = param("epochs", int, 3)
    rate = param("rate", float, 0.1)
    label = param("label", str, "demo")
    inputs = pathlib.Path(os.environ.get("PODDER_MOUNT_DATA_INPUT", "/data/input"))
    files = sorted(p for p in inputs.rglob("*") if p.is_file()) if inputs.is_dir() else []
    total = sum(p.stat().st_size for p in files)
    for step in range(1, epochs + 1):
        # One JSON object per line becomes training metrics.
        print(json.dumps({"step": step, "loss": round(1.0 / (1 + rate * step), 4)}), flush=True)
    out = pathlib.Path(os.environ.get("PODDER_OUTPUT", "/output"))
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "task": "{{name}}",
        "label": label,
        "epochs": epochs,
        "rate": rate,
        "input_files": len(files),
        "input_bytes": total,
        "has_docstrings": main.__doc__ is not None or param.__doc__ is not None,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{label}: read {len(files)} files ({total} bytes), wrote {out / 'result.json'}")


if __name__ == "__main__":
    main()
