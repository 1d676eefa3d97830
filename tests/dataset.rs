//! `vela dataset ...` end to end: write a small robomimic file, convert it to
//! RLDS and back, and check what `info` and `stats` report.

use std::path::PathBuf;
use std::process::{Command, Output};

use vela_data::robomimic::RobomimicWriter;
use vela_data::{synthetic, DatasetMeta, EpisodeWriter};

fn vela(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vela")).args(args).env("VELA_LOG", "warn").output().expect("vela runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vela-dataset-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn convert_info_stats() {
    let dir = scratch("cli");
    let h5 = dir.join("demo.hdf5");
    // Named as `vela datagen` names datasets; RLDS gets the snake_case name tfds.builder looks up.
    let meta = DatasetMeta { name: "Stack_D0".into(), env_args: serde_json::json!({"env_name": "Stack_D0"}) };
    let mut w: Box<dyn EpisodeWriter> = Box::new(RobomimicWriter::create(&h5, &meta).unwrap());
    for i in 0..3 {
        w.append(&synthetic::episode(i, 10, &["agentview"], 32)).unwrap();
    }
    w.finish().unwrap();

    let out = dir.join("rlds");
    let (h5s, outs) = (h5.to_str().unwrap(), out.to_str().unwrap());
    let o = vela(&[
        "dataset", "convert", "--dataset", h5s, "--dataset-type", "mimicgen", "--convert", "rlds", "--remap-keys",
        "agentview:image", "--output", outs,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("wrote 3 episodes, 30 steps"), "{}", text(&o));
    let version_dir = out.join("stack_d0/1.0.0");
    assert!(version_dir.join("stack_d0-train.tfrecord-00000-of-00001").is_file());

    let o = vela(&["dataset", "info", outs]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("rlds") && t.contains("episodes: 3  steps: 30"), "{t}");
    assert!(t.contains("image/image") && t.contains("[32, 32, 3]") && t.contains("obs/state"), "{t}");
    assert!(t.contains("2 distinct") && t.contains("stack the red block on the green block"), "{t}");

    let o = vela(&["dataset", "info", "--json", h5s]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["episodes"].as_u64(), v["steps"].as_u64()), (Some(3), Some(30)));
    assert_eq!(v["keys"]["image/agentview"], serde_json::json!([32, 32, 3]));
    assert_eq!(v["keys"]["obs/object"], serde_json::json!([23]));

    // Back to HDF5, then stats from both formats agree on actions.
    let back = dir.join("back.hdf5");
    let o = vela(&[
        "dataset", "convert", "--dataset", version_dir.to_str().unwrap(), "--convert", "mimicgen", "--remap-keys",
        "image:agentview", "--output", back.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let (s1, s2, plot) = (dir.join("s1.json"), dir.join("s2.json"), dir.join("actions.svg"));
    let o = vela(&["dataset", "stats", h5s, "--out", s1.to_str().unwrap(), "--plot", plot.to_str().unwrap()]);
    assert!(o.status.success() && text(&o).contains("grip"), "{}", text(&o));
    let o = vela(&["dataset", "stats", back.to_str().unwrap(), "--out", s2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let a: serde_json::Value = serde_json::from_slice(&std::fs::read(&s1).unwrap()).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(&s2).unwrap()).unwrap();
    assert_eq!(a["Stack_D0"]["action"], b["stack_d0"]["action"]);
    assert_eq!(a["Stack_D0"]["num_transitions"], 30);
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));

    // Bad input: a clear error naming the file.
    let junk = dir.join("junk.hdf5");
    std::fs::write(&junk, b"not hdf5").unwrap();
    let o = vela(&["dataset", "info", junk.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("junk.hdf5"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
