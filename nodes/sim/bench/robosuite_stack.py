"""Side-by-side reference: robosuite's own Stack env (Panda, OSC_POSE, 20 Hz) on
this machine, to compare with `cargo run --release --example bench`.

    python3 -m venv /tmp/rsvenv && /tmp/rsvenv/bin/pip install robosuite==1.5.2 mujoco==3.17.0
    MUJOCO_GL=egl /tmp/rsvenv/bin/python nodes/sim/bench/robosuite_stack.py [steps] [size]
"""
import sys
import time

import numpy as np
import robosuite as suite
from robosuite.controllers import load_composite_controller_config

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 400
size = int(sys.argv[2]) if len(sys.argv) > 2 else 224


def run(camera):
    env = suite.make(
        "Stack",
        robots="Panda",
        controller_configs=load_composite_controller_config(controller="BASIC"),
        has_renderer=False,
        has_offscreen_renderer=camera,
        use_camera_obs=camera,
        camera_names="agentview",
        camera_heights=size,
        camera_widths=size,
        control_freq=20,
        ignore_done=True,
    )
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(30):  # numba JIT and first-frame setup stay out of the timing
        env.step(rng.uniform(-0.3, 0.3, 7))
    t = time.perf_counter()
    for i in range(steps):
        a = rng.uniform(-0.3, 0.3, 7)
        env.step(a)
    dt = time.perf_counter() - t
    env.close()
    return steps / dt


print(f"robosuite 1.5.2 Stack: {run(False):.1f} control steps/s without camera, "
      f"{run(True):.1f} with agentview {size}x{size}")
