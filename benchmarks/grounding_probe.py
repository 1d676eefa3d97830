"""Does a policy read its instruction? An offline probe of instruction grounding (issue 8, 10).

Usage:
  python3 benchmarks/grounding_probe.py --vela target/release/vela --model models/openvla-small-mimicgen \
      [--camera agentview|agentview_hand] [--quantization fp16] [--scenes 60] [--seed 100] [--out FILE.json]
(needs h5py and numpy)

Stack_D1 scenes keep the small cube red and the big one green. For each scene's first frame the
model is asked twice: "put the red cube on the green cube" and the reverse. Its first action's
x-y direction should point at the cube the instruction says to move. Scenes where the two cubes
lie within 45 degrees of each other, seen from the hand, are left out (the direction cannot tell
them apart), and so are answers with almost no x-y motion. A model that ignores the instruction
answers both prompts alike and scores about 50 % over the pair; one that reads it scores near 100 %.
The scenes come from `vela dagger --beta 1 --max-steps 1` (the first frame, the hand and both
cube positions, written as robomimic HDF5).

--pointing asks a model trained with `vela train --pointing` "point at the red cube" and "point
at the green cube" instead, and checks whether the table position it answers (dimensions 3-4,
x 0.25 m) lies nearer the named cube than the other. A model that reads the colour scores near
100 %; one that always names the same cube scores 50 %.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import h5py
import numpy as np

PROMPTS = [("red", "green"), ("green", "red")]  # (cube to move, base); red is cube A in D1


def write_png(path, rgb):
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def angle(u, v):
    c = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-12)
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vela", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--camera", default="agentview")
    ap.add_argument("--quantization", default="fp16")
    ap.add_argument("--scenes", type=int, default=60)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--out")
    ap.add_argument("--pointing", action="store_true", help="ask pointing questions (models trained with --pointing)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="grounding-")
    subprocess.run(
        [a.vela, "dagger", "--beta", "1", "--tasks", "Stack_D1", "--episodes", str(a.scenes), "--max-steps", "1",
         "--workers", "1", "--seed", str(a.seed), "--camera", a.camera, "--output", tmp, "--overwrite"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = h5py.File(os.path.join(tmp, "Stack_D1.hdf5"), "r")["data"]
    if a.pointing:
        return pointing(a, tmp, data)
    rows = []
    for name in sorted(data, key=lambda s: int(s.split("_")[1])):
        ep = data[name]
        eef = ep["obs"]["robot0_eef_pos"][0][:2]
        obj = ep["obs"]["object"][0]
        cubes = {"red": obj[0:2] - eef, "green": obj[7:9] - eef}
        apart = angle(cubes["red"], cubes["green"])
        png = os.path.join(tmp, f"{name}.png")
        write_png(png, ep["obs"][f"{a.camera}_image"][0])
        row = {"scene": name, "cubes_apart_deg": round(apart, 1), "answers": []}
        for move, base in PROMPTS:
            text = f"put the {move} cube on the {base} cube"
            out = subprocess.run(
                [a.vela, "vla", "predict", "--model", a.model, "--quantization", a.quantization, "--image", png,
                 "--instruction", text], check=True, capture_output=True, text=True).stdout
            action = json.loads(out.strip().splitlines()[-1])
            xy = np.array(action[:2])
            ans = {"instruction": text, "action": action}
            if np.linalg.norm(xy) > 0.1:
                to_move, to_other = angle(xy, cubes[move]), angle(xy, cubes[base])
                ans.update(deg_to_instructed=round(to_move, 1), deg_to_other=round(to_other, 1), towards_instructed=bool(to_move < to_other))
            row["answers"].append(ans)
        rows.append(row)
    used = [r for r in rows if r["cubes_apart_deg"] >= 45 and all("towards_instructed" in x for x in r["answers"])]
    per_prompt = [sum(r["answers"][k]["towards_instructed"] for r in used) for k in range(2)]
    both = sum(all(x["towards_instructed"] for x in r["answers"]) for r in used)
    same = sum(r["answers"][0]["action"][:2] == r["answers"][1]["action"][:2] for r in rows)
    summary = {
        "model": a.model, "camera": a.camera, "quantization": a.quantization, "scenes": len(rows), "scenes_used": len(used),
        "towards_instructed_pct": {f"{m} on {b}": round(100 * n / max(1, len(used)), 1) for (m, b), n in zip(PROMPTS, per_prompt)},
        "overall_pct": round(100 * sum(per_prompt) / max(1, 2 * len(used)), 1),
        "both_right_pct": round(100 * both / max(1, len(used)), 1),
        "identical_xy_for_both_prompts": same,
    }
    print(json.dumps(summary, indent=1))
    if a.out:
        json.dump({"summary": summary, "scenes": rows}, open(a.out, "w"), indent=1)


def predict(a, png, text, space=None):
    cmd = [a.vela, "vla", "predict", "--model", a.model, "--quantization", a.quantization, "--image", png, "--instruction", text]
    if space:
        cmd += ["--action-space", space]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def pointing(a, tmp, data):
    rows = []
    for name in sorted(data, key=lambda s: int(s.split("_")[1])):
        ep = data[name]
        obj = ep["obs"]["object"][0]
        cubes = {"red": obj[0:2], "green": obj[7:9]}
        png = os.path.join(tmp, f"{name}.png")
        write_png(png, ep["obs"][f"{a.camera}_image"][0])
        row = {"scene": name, "answers": []}
        for colour, other in PROMPTS:
            # The answer is not an action: read the raw bins, not the dataset's action statistics.
            v = predict(a, png, f"point at the {colour} cube", "normalized")
            at = np.array(v[3:5]) * 0.25
            err, err_other = float(np.linalg.norm(at - cubes[colour])), float(np.linalg.norm(at - cubes[other]))
            row["answers"].append({"colour": colour, "table_xy": at.round(4).tolist(), "error_m": round(err, 4),
                                   "error_to_other_m": round(err_other, 4), "nearer_named": err < err_other})
        rows.append(row)
    answers = [x for r in rows for x in r["answers"]]
    same = sum(r["answers"][0]["table_xy"] == r["answers"][1]["table_xy"] for r in rows)
    summary = {
        "model": a.model, "camera": a.camera, "quantization": a.quantization, "scenes": len(rows), "mode": "pointing",
        "nearer_named_cube_pct": round(100 * sum(x["nearer_named"] for x in answers) / max(1, len(answers)), 1),
        "median_error_to_nearest_cube_m": round(float(np.median([min(x["error_m"], x["error_to_other_m"]) for x in answers])), 4),
        "identical_answer_for_both_colours": same,
    }
    print(json.dumps(summary, indent=1))
    if a.out:
        json.dump({"summary": summary, "scenes": rows}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
