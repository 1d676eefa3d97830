"""Checks Vela's RLDS files against real TensorFlow Datasets, both ways.

Vela writes RLDS without TensorFlow (its own TFRecord/Example code), so only
TFDS itself can say whether OpenVLA's loader will accept the output, and
only a dataset TFDS wrote can say whether Vela reads what other people
publish. Run by scripts/check-tfds.sh; every subcommand exits non-zero on
the first disagreement, naming the episode, step and key.

  read-vela    --data-dir D --name N --hdf5 F --remap old:new,...
               TFDS loads Vela's RLDS output; every value matches the
               robomimic file it was converted from (read with h5py).
  write        --data-dir D --name N --expect F.npz
               TFDS writes a small RLDS dataset (JPEG and PNG cameras,
               float32 and float64 tensors, two shards); the values it
               was given are saved, in the order TFDS stored them.
  check-hdf5   --hdf5 F --expect F.npz --info F.json
               Vela's conversion of that dataset to robomimic HDF5, and
               `vela dataset info --json` of it, match those values.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

# JPEG (quality 95 both in Vela and TFDS) may move a pixel a little; the mean
# error over a frame stays far below this, a wrong or shifted frame does not.
JPEG_MEAN_ABS_ERR = 3.0
# Two JPEG decoders disagree on 4:2:0 frames: TensorFlow's own fast and
# accurate DCTs differ by ~1.3 levels on average on the frames below, and
# libjpeg-turbo's chroma upsampling differs from zune-jpeg's (Vela) by ~1.7
# (up to 8 at sharp edges). Neighbouring steps differ by ~15.
JPEG_DECODER_MEAN_ABS_ERR = 2.5
PROPRIO_KEYS = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]


class Mismatch(Exception):
    pass


def expect(cond, where, msg):
    if not cond:
        raise Mismatch(f"{where}: {msg}")


def close(a, b, where, atol=1e-6):
    a, b = np.asarray(a), np.asarray(b)
    expect(a.shape == b.shape, where, f"shape {a.shape} != {b.shape}")
    if a.size:
        err = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
        expect(err <= atol, where, f"values differ by up to {err:g} (> {atol:g})")


def image_close(got, want, where, lossless, mean_err=JPEG_MEAN_ABS_ERR):
    got, want = np.asarray(got), np.asarray(want)
    expect(got.dtype == np.uint8, where, f"dtype {got.dtype}, expected uint8")
    expect(got.shape == want.shape, where, f"shape {got.shape} != {want.shape}")
    err = np.abs(got.astype(np.int16) - want.astype(np.int16))
    if lossless:
        expect(err.max() == 0, where, f"lossless frame differs by up to {err.max()}")
    else:
        print(f"{where}: mean abs error {err.mean():.3f}, max {err.max()}") if os.environ.get("VERBOSE") else None
        expect(err.mean() <= mean_err, where, f"mean error {err.mean():.2f} > {mean_err}")


def parse_remap(spec):
    pairs = [p.split(":", 1) for p in spec.split(",") if p.strip()]
    return {a: b for a, b in pairs}


def read_vela(args):
    """TFDS, as OpenVLA calls it, loads what `vela dataset convert` wrote."""
    version_dir = os.path.join(args.data_dir, args.name, "1.0.0")
    builder = tfds.builder_from_directory(version_dir)
    # OpenVLA's dataset code opens datasets by name under a data_dir.
    by_name = tfds.builder(args.name, data_dir=args.data_dir)
    expect(by_name.info.splits["train"].num_examples == builder.info.splits["train"].num_examples,
           "tfds.builder", "sees a different number of episodes than builder_from_directory")
    remap = parse_remap(args.remap)
    with h5py.File(args.hdf5, "r") as f:
        demos = sorted(f["data"].keys(), key=lambda d: int(d.split("_")[-1]))
        info = builder.info
        expect(info.name == args.name, "dataset_info.json", f"name {info.name!r} != {args.name!r}")
        split = info.splits["train"]
        expect(split.num_examples == len(demos), "dataset_info.json",
               f"{split.num_examples} train episodes, the HDF5 file has {len(demos)}")
        shards = [p for p in os.listdir(version_dir) if ".tfrecord-" in p]
        expect(split.num_shards == len(shards), "dataset_info.json",
               f"{split.num_shards} shards, the folder has {len(shards)}")
        steps_spec = info.features["steps"]
        obs_spec = steps_spec["observation"]
        expect(steps_spec["action"].shape == (7,), "features.json", f"action shape {steps_spec['action'].shape}")
        ds = builder.as_dataset(split="train", shuffle_files=False)
        n = 0
        for i, ep in enumerate(ds):
            demo = demos[i]
            g = f["data"][demo]
            where = f"episode {i} ({demo})"
            path = ep["episode_metadata"]["file_path"].numpy().decode()
            expect(path == demo, where, f"episode_metadata/file_path {path!r}")
            steps = list(ep["steps"].as_numpy_iterator())
            t = g["actions"].shape[0]
            expect(len(steps) == t, where, f"{len(steps)} steps, the HDF5 demo has {t}")
            col = lambda k: np.stack([s[k] for s in steps])  # noqa: E731
            close(col("action"), np.asarray(g["actions"], np.float32), f"{where} steps/action")
            flags = np.zeros(t, bool)
            first, last = flags.copy(), flags.copy()
            first[0], last[-1] = True, True
            expect((col("is_first") == first).all(), where, "steps/is_first is not true on the first step only")
            expect((col("is_last") == last).all(), where, "steps/is_last is not true on the last step only")
            terminal = np.asarray(g["dones"]) != 0 if "dones" in g else last
            expect((col("is_terminal") == terminal).all(), where, "steps/is_terminal != dones")
            reward = np.asarray(g["rewards"], np.float32) if "rewards" in g else last.astype(np.float32)
            close(col("reward"), reward, f"{where} steps/reward")
            close(col("discount"), np.ones(t, np.float32), f"{where} steps/discount")
            instr = [s.decode() for s in col("language_instruction")]
            if "instructions" in g:
                want = [s.decode() if isinstance(s, bytes) else s for s in g["instructions"][()]]
                expect(instr == want, where, f"language_instruction {instr[:1]} != {want[:1]}")
            obs = {k: np.stack([s["observation"][k] for s in steps]) for k in steps[0]["observation"]}
            seen = set()
            for key, d in g["obs"].items():
                if key.endswith("_image"):
                    cam = key[: -len("_image")]
                    name = remap.get(cam, cam)
                    expect(name in obs, where, f"no steps/observation/{name} for HDF5 obs/{key}")
                    expect(obs_spec[name].shape == d.shape[1:], "features.json",
                           f"{name} shape {obs_spec[name].shape} != {d.shape[1:]}")
                    for s in range(t):
                        image_close(obs[name][s], d[s], f"{where} step {s} steps/observation/{name}", False)
                else:
                    name = remap.get(key, key)
                    close(obs[name], np.asarray(d, np.float32), f"{where} steps/observation/{name}", atol=1e-5)
                seen.add(name)
            if all(k in g["obs"] for k in PROPRIO_KEYS) and "state" not in g["obs"]:
                state = np.concatenate([np.asarray(g["obs"][k], np.float32) for k in PROPRIO_KEYS], axis=1)
                close(obs["state"], state, f"{where} steps/observation/state", atol=1e-5)
                seen.add("state")
            extra = set(obs) - seen
            expect(not extra, where, f"observation keys {sorted(extra)} have no HDF5 source")
            n += 1
        expect(n == len(demos), "as_dataset", f"yielded {n} episodes, expected {len(demos)}")
        # OpenVLA (through dlimp) reads steps undecoded and decodes frames itself.
        raw = builder.as_dataset(split="train", decoders={"steps": tfds.decode.SkipDecoding()}, shuffle_files=False)
        for i, ep in enumerate(raw):
            for name, spec in obs_spec.items():
                if isinstance(spec, tfds.features.Image):
                    frames = ep["steps"]["observation"][name]
                    expect(frames.dtype == tf.string, f"episode {i} SkipDecoding", f"{name} is {frames.dtype}")
                    shape = tuple(tf.io.decode_image(frames[0]).shape)
                    expect(shape == spec.shape, f"episode {i} SkipDecoding", f"{name} decodes to {shape}")
    print(f"TFDS read {n} episodes of {args.name} ({split.num_shards} shards, "
          f"observation {sorted(obs_spec.keys())}): all values match {args.hdf5}")


SIZE = 32
INSTRUCTIONS = ["stack the red block on the green block", "pick up the cube"]


def make_episode(rng, i, t):
    """Smooth images (JPEG keeps them close), a distinct pattern per step."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    frames, wrist = [], []
    for s in range(t):
        img = np.stack([(xx * 8 + s * 25 + i * 40) % 256, (yy * 8) % 256, np.full_like(xx, 60 + 20 * s)], -1)
        frames.append(img.astype(np.uint8))
        # PNG must come back exactly; smooth so Vela's JPEG of it (the round trip) stays close.
        r = np.hypot(xx - 16, yy - 16)
        wrist.append(np.stack([r * 7 + s * 3, 255 - r * 5 - i * 20, (xx + yy) * 3 + s * 9], -1).clip(0, 255).astype(np.uint8))
    reward = np.zeros(t, np.float32)
    reward[-1] = 1.0
    return {
        "image": np.stack(frames),
        "wrist_image": np.stack(wrist),
        "state": rng.normal(size=(t, 8)).astype(np.float32),
        "joint_state": rng.normal(size=(t, 7)),  # float64: TFDS stores it as float32
        "action": rng.uniform(-1, 1, (t, 7)).astype(np.float32),
        "reward": reward,
        "discount": np.ones(t, np.float32),
        "is_terminal": np.arange(t) == t - 1,
        "language_instruction": INSTRUCTIONS[i % 2],
        "file_path": f"/data/tfds_written/episode_{i}.npy",
    }


def write(args):
    """A tiny RLDS dataset written by TFDS itself, LIBERO-like as OpenVLA uses."""
    from tensorflow_datasets.core.dataset_builders import adhoc_builder

    f = tfds.features
    features = f.FeaturesDict({
        "steps": f.Dataset({
            "observation": f.FeaturesDict({
                "image": f.Image(shape=(SIZE, SIZE, 3), dtype=np.uint8, encoding_format="jpeg"),
                "wrist_image": f.Image(shape=(SIZE, SIZE, 3), dtype=np.uint8, encoding_format="png"),
                "state": f.Tensor(shape=(8,), dtype=np.float32),
                "joint_state": f.Tensor(shape=(7,), dtype=np.float64),
            }),
            "action": f.Tensor(shape=(7,), dtype=np.float32),
            "discount": f.Scalar(dtype=np.float32),
            "reward": f.Scalar(dtype=np.float32),
            "is_first": f.Scalar(dtype=np.bool_),
            "is_last": f.Scalar(dtype=np.bool_),
            "is_terminal": f.Scalar(dtype=np.bool_),
            "language_instruction": f.Text(),
        }),
        "episode_metadata": f.FeaturesDict({"file_path": f.Text()}),
    })
    rng = np.random.default_rng(7)
    episodes = [make_episode(rng, i, t) for i, t in enumerate([5, 9, 3, 7])]

    def examples():
        for ep in episodes:
            t = len(ep["action"])
            steps = [{
                "observation": {k: ep[k][s] for k in ("image", "wrist_image", "state", "joint_state")},
                "action": ep["action"][s], "discount": ep["discount"][s], "reward": ep["reward"][s],
                "is_first": s == 0, "is_last": s == t - 1, "is_terminal": bool(ep["is_terminal"][s]),
                "language_instruction": ep["language_instruction"],
            } for s in range(t)]
            yield ep["file_path"], {"steps": steps, "episode_metadata": {"file_path": ep["file_path"]}}

    builder = adhoc_builder.store_as_tfds_dataset(
        name=args.name, version="1.0.0", features=features, split_datasets={"train": examples()},
        data_dir=args.data_dir, download_config=tfds.download.DownloadConfig(num_shards=2),
    )
    # TFDS shuffles episodes by key; record the order it stored them in, and the
    # JPEG frames as TensorFlow decodes them (Vela's decoder must agree with it).
    by_path = {ep["file_path"]: ep for ep in episodes}
    out, order = {}, []
    for i, ep in enumerate(builder.as_dataset(split="train", shuffle_files=False)):
        path = ep["episode_metadata"]["file_path"].numpy().decode()
        order.append(path)
        for k, v in by_path[path].items():
            out[f"{i}/{k}"] = np.asarray(v)
        out[f"{i}/image_tf"] = np.stack([s["observation"]["image"] for s in ep["steps"].as_numpy_iterator()])
    out["order"] = np.array(order)
    np.savez(args.expect, **out)
    print(f"TFDS wrote {len(order)} episodes in {builder.info.splits['train'].num_shards} shards "
          f"to {builder.data_dir}")


def write_rt1(args):
    """RT-1's (fractal20220817_data) layout: a dict-valued action, written by TFDS; Vela must
    read it as [world_vector, rotation_delta, gripper_closedness_action]."""
    from tensorflow_datasets.core.dataset_builders import adhoc_builder

    f = tfds.features
    features = f.FeaturesDict({"steps": f.Dataset({
        "observation": f.FeaturesDict({"image": f.Image(shape=(SIZE, SIZE, 3), dtype=np.uint8),
                                       "natural_language_instruction": f.Text()}),
        "action": f.FeaturesDict({
            "world_vector": f.Tensor(shape=(3,), dtype=np.float32),
            "rotation_delta": f.Tensor(shape=(3,), dtype=np.float32),
            "gripper_closedness_action": f.Tensor(shape=(1,), dtype=np.float32),
            "base_displacement_vector": f.Tensor(shape=(2,), dtype=np.float32),
            "terminate_episode": f.Tensor(shape=(3,), dtype=np.int32),
        }),
        "reward": f.Scalar(dtype=np.float32), "discount": f.Scalar(dtype=np.float32),
        "is_first": f.Scalar(dtype=np.bool_), "is_last": f.Scalar(dtype=np.bool_), "is_terminal": f.Scalar(dtype=np.bool_),
    })})
    rng = np.random.default_rng(11)
    want = {}

    def examples():
        for i, t in enumerate([4, 6]):
            wv, rd = rng.uniform(-1, 1, (t, 3)).astype(np.float32), rng.uniform(-1, 1, (t, 3)).astype(np.float32)
            gr = rng.choice([-1.0, 1.0], (t, 1)).astype(np.float32)
            want[f"ep{i}"] = np.concatenate([wv, rd, gr], 1)
            steps = [{
                "observation": {"image": np.full((SIZE, SIZE, 3), 40 * s, np.uint8),
                                "natural_language_instruction": f"pick object {i}"},
                "action": {"world_vector": wv[s], "rotation_delta": rd[s], "gripper_closedness_action": gr[s],
                           "base_displacement_vector": np.zeros(2, np.float32), "terminate_episode": np.array([0, 1, 0], np.int32)},
                "reward": np.float32(s == t - 1), "discount": np.float32(1.0),
                "is_first": s == 0, "is_last": s == t - 1, "is_terminal": s == t - 1,
            } for s in range(t)]
            yield f"ep{i}", {"steps": steps}

    builder = adhoc_builder.store_as_tfds_dataset(
        name=args.name, version="1.0.0", features=features, split_datasets={"train": examples()},
        data_dir=args.data_dir, download_config=tfds.download.DownloadConfig(num_shards=1))
    # Episodes in the order TFDS stored them, told apart by their first world_vector.
    order = []
    for ep in builder.as_dataset(split="train", shuffle_files=False):
        first = next(iter(ep["steps"].as_numpy_iterator()))["action"]["world_vector"]
        order.append(next(k for k, v in want.items() if np.allclose(v[0, :3], first)))
    np.savez(args.expect, **{f"{i}": want[k] for i, k in enumerate(order)})
    print(f"TFDS wrote {len(order)} RT-1-layout episodes (dict actions) to {builder.data_dir}")


def check_rt1(args):
    exp = np.load(args.expect)
    with h5py.File(args.hdf5, "r") as fh:
        expect(len(fh["data"]) == len(exp.files), args.hdf5, f"{len(fh['data'])} demos, expected {len(exp.files)}")
        for i in range(len(exp.files)):
            g = fh["data"][f"demo_{i}"]
            close(g["actions"], exp[f"{i}"], f"demo_{i} actions from the action dict")
            instr = {s.decode() if isinstance(s, bytes) else s for s in g["instructions"][()]}
            expect(len(instr) == 1 and next(iter(instr)).startswith("pick object "), f"demo_{i}",
                   f"instructions {instr} (from observation/natural_language_instruction)")
    print(f"Vela read {len(exp.files)} RT-1-layout episodes: dict actions became 7-D in the right order")


def check_hdf5(args):
    """What Vela made of the TFDS-written dataset holds the values TFDS was given."""
    exp = np.load(args.expect)
    order = list(exp["order"])
    with open(args.info) as fh:
        info = json.load(fh)
    steps = sum(len(exp[f"{i}/action"]) for i in range(len(order)))
    expect(info["episodes"] == len(order), "vela dataset info", f"{info['episodes']} episodes, expected {len(order)}")
    expect(info["steps"] == steps, "vela dataset info", f"{info['steps']} steps, expected {steps}")
    want_keys = {"actions": [7], "image/image": [SIZE, SIZE, 3], "image/wrist_image": [SIZE, SIZE, 3],
                 "obs/state": [8], "obs/joint_state": [7]}
    expect(info["keys"] == want_keys, "vela dataset info", f"keys {info['keys']} != {want_keys}")
    expect(sorted(info["instructions"]) == sorted(INSTRUCTIONS), "vela dataset info",
           f"instructions {sorted(info['instructions'])}")
    with h5py.File(args.hdf5, "r") as f:
        expect(len(f["data"]) == len(order), args.hdf5, f"{len(f['data'])} demos, expected {len(order)}")
        for i in range(len(order)):
            g = f["data"][f"demo_{i}"]
            where = f"demo_{i} ({order[i]})"
            e = lambda k: exp[f"{i}/{k}"]  # noqa: E731
            close(g["actions"], e("action"), f"{where} actions")
            close(g["rewards"], e("reward"), f"{where} rewards")
            expect((np.asarray(g["dones"]) != 0).tolist() == e("is_terminal").tolist(), where, "dones != is_terminal")
            instr = [s.decode() if isinstance(s, bytes) else s for s in g["instructions"][()]]
            expect(set(instr) == {str(e("language_instruction"))}, where, f"instructions {set(instr)}")
            close(g["obs/state"], e("state"), f"{where} obs/state")
            close(g["obs/joint_state"], e("joint_state").astype(np.float32), f"{where} obs/joint_state")
            image_close(g["obs/wrist_image_image"], e("wrist_image"), f"{where} obs/wrist_image_image (PNG)", True)
            image_close(g["obs/image_image"], e("image_tf"), f"{where} obs/image_image (JPEG, as TF decodes it)",
                        False, JPEG_DECODER_MEAN_ABS_ERR)
    print(f"Vela read {len(order)} TFDS-written episodes ({steps} steps): all values match what TFDS was given")


# Subcommand → (function, required options); read-vela also takes --remap.
COMMANDS = {
    "read-vela": (read_vela, ["--data-dir", "--name", "--hdf5"]),
    "write": (write, ["--data-dir", "--name", "--expect"]),
    "check-hdf5": (check_hdf5, ["--hdf5", "--expect", "--info"]),
    "write-rt1": (write_rt1, ["--data-dir", "--name", "--expect"]),
    "check-rt1": (check_rt1, ["--hdf5", "--expect"]),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, (_, options) in COMMANDS.items():
        c = sub.add_parser(name)
        for o in options:
            c.add_argument(o, required=True)
        if name == "read-vela":
            c.add_argument("--remap", default="")
    args = p.parse_args()
    tf.config.set_visible_devices([], "GPU")
    try:
        COMMANDS[args.cmd][0](args)
    except Mismatch as e:
        print(f"MISMATCH: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
