"""Action and failure statistics of `vela dagger --beta 0` rollouts (BENCHMARKS.md, session 22).

Usage: python3 benchmarks/rollout_stats.py ROLLOUTS.hdf5 [...]   (needs h5py and numpy)

Per file: the share of x/y/z actions at +-1 (policy and expert label), how often the policy's
sign matches the expert's where |label| > 0.1, and the mean |action - label|. Per failed episode:
whether the cube to move (object[0:3], the expert's target) was lifted, the steps within 1.5 cm
of it in x-y and the hand's height above it there, and the share of steps nearer the other cube.
"""
import sys

import h5py
import numpy as np

for path in sys.argv[1:]:
    data = h5py.File(path, "r")["data"]
    acts, labels = [], []
    for name in data:
        ep = data[name]
        a, lab = ep["actions"][:], ep["obs"]["intended_action"][:]
        acts.append(a[:, :3])
        labels.append(lab[:, :3])
        obj, eef = ep["obs"]["object"][:], ep["obs"]["robot0_eef_pos"][:]
        top, other = obj[:, 0:3], obj[:, 7:10]
        xy_top = np.linalg.norm(eef[:, :2] - top[:, :2], axis=1)
        xy_other = np.linalg.norm(eef[:, :2] - other[:, :2], axis=1)
        lifted = (top[:, 2] - top[0, 2]) > 0.02
        if lifted.any():
            print(f"{path} {name}: {len(a)} steps, cube lifted")
            continue
        near = xy_top < 0.015
        above = eef[:, 2] - top[:, 2]
        print(
            f"{path} {name}: {len(a)} steps, cube never lifted; within 1.5 cm: {near.sum()} steps"
            + (f" at {above[near].min():.3f}-{above[near].max():.3f} m above, closing {np.mean(a[near, 6] > 0):.2f}" if near.any() else "")
            + f"; nearer the other cube {np.mean(xy_other < xy_top):.2f}"
        )
    a, lab = np.concatenate(acts), np.concatenate(labels)
    clear = np.abs(lab) > 0.1
    print(
        f"{path}: {len(a)} steps; at +-1: policy {np.mean(np.abs(a) >= 0.99):.2f}, expert {np.mean(np.abs(lab) >= 0.99):.2f}; "
        f"same sign {np.mean(np.sign(a[clear]) == np.sign(lab[clear])):.2f}; mean |action - label| {np.round(np.abs(a - lab).mean(0), 2)}"
    )
