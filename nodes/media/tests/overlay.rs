//! TextOverlay on real frames, drawn with the real font.

use std::sync::Arc;

use serde_json::Map;
use vela_media::TextOverlay;
use vela_runtime::*;

fn overlay(params: &[(&str, serde_json::Value)]) -> Result<TextOverlay, NodeError> {
    let mut given = Map::new();
    for (k, v) in params {
        given.insert(k.to_string(), v.clone());
    }
    let p = resolve_params(&TextOverlay::descriptor(), &given).map_err(|e| NodeError::msg(format!("{e:?}")))?;
    TextOverlay::new(&NodeInit { name: "overlay", params: &p })
}

fn save_png(img: &Image, name: &str) {
    // Kept for people to look at: target/overlay-*.png.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let _ = std::fs::create_dir_all(&dir);
    let f = std::fs::File::create(dir.join(name)).unwrap();
    let mut enc = png::Encoder::new(f, img.width, img.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&img.data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_actions_are_drawn_on_frames() {
    let mut reg = Registry::with_builtins();
    vela_media::register(&mut reg);
    vela_prompt_stub(&mut reg);
    let engine = Engine::new(Arc::new(reg));
    let graph = GraphSpec {
        nodes: vec![
            NodeSpec::new("cam", "TestPattern").param("width", 224).param("height", 224).param("fps", 30.0),
            NodeSpec::new("say", "Say"),
            NodeSpec::new("overlay", "TextOverlay"),
            NodeSpec::new("sink", "Collector"),
        ],
        edges: vec![
            EdgeSpec::new("cam.image", "overlay.image"),
            EdgeSpec::new("say.text", "overlay.text"),
            EdgeSpec::new("say.actions", "overlay.text"),
            EdgeSpec::new("overlay.image", "sink.in"),
        ],
    };
    engine.load(&graph).await.unwrap();
    engine.start().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let s = engine.stats().await;
    assert!(s["sink"].received > 3);
    assert!(s["overlay"].summary.starts_with("2 texts"), "{}", s["overlay"].summary);
    engine.stop().await;
}

/// A source that sends one instruction and one action vector at start.
fn vela_prompt_stub(reg: &mut Registry) {
    struct Say;
    impl Node for Say {
        fn start(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
            ctx.send("text", Text::final_text("put the red block on the green block"))?;
            ctx.send("actions", Actions::new(vec![0.01, -0.2, 0.3, 0.0, 0.0, 0.1, 1.0], "stack"))
        }
        fn on_input(&mut self, _: &str, _: Message, _: &mut Context) -> Result<(), NodeError> {
            Ok(())
        }
    }
    reg.register(
        NodeDescriptor::new("Say", "Testing", "Say").output("text", DataType::Text, "").output("actions", DataType::Actions, ""),
        |_| Ok(Box::new(Say)),
    );
}

#[test]
fn drawing_changes_the_right_pixels() {
    let mut node = overlay(&[("font_size", 18.0.into())]).unwrap();
    let grey = Image::rgb8(224, 224, vec![128u8; 224 * 224 * 3]).unwrap();
    let text = Message::new("sim", Text::final_text("put the red block on the green block"));
    let actions = Message::new("vla", Actions::new(vec![0.012, -0.3, 0.25, 0.0, 0.0, 0.1, 1.0], "stack"));
    let mut ctx = Context::detached("overlay", TextOverlay::descriptor());
    node.on_input("text", text, &mut ctx).unwrap();
    node.on_input("text", actions, &mut ctx).unwrap();
    assert!(ctx.take_sent().is_empty(), "texts alone produce no frame");
    let out = node.draw(&grey);
    save_png(&out, "overlay-224.png");
    // Green text pixels near the top-left, darker box behind, untouched elsewhere.
    let greenish = (0..40).flat_map(|y| (0..224).map(move |x| (x, y))).filter(|&(x, y)| {
        let [r, g, b] = out.pixel(x, y);
        g > 150 && r < 140 && b < 100
    });
    assert!(greenish.count() > 50, "the first text is drawn in #78d715");
    let whiteish = (30..120).flat_map(|y| (0..224).map(move |x| (x, y))).filter(|&(x, y)| out.pixel(x, y).iter().all(|c| *c > 200));
    assert!(whiteish.count() > 30, "the second text (actions) is white");
    assert!(out.pixel(3, 12)[0] < 100, "the box darkens the frame: {:?}", out.pixel(3, 12));
    assert_eq!(out.pixel(200, 210), [128, 128, 128], "the rest of the frame is untouched");
    // The input frame itself is not modified (it may be shared with other consumers).
    assert!(grey.data.iter().all(|b| *b == 128));
}

#[test]
fn bad_parameters_are_clear_errors() {
    let e = overlay(&[("font", "/nonexistent/font.ttf".into())]).err().unwrap();
    assert!(e.to_string().contains("fonts-dejavu-core"), "{e}");
    let e = overlay(&[("color", "greenish".into())]).err().unwrap();
    assert!(e.to_string().contains("not a colour"), "{e}");
}

#[test]
fn frames_pass_through_untouched_without_text() {
    let mut node = overlay(&[]).unwrap();
    let frame = Image::rgb8(8, 8, vec![7u8; 8 * 8 * 3]).unwrap();
    let ptr = frame.data.as_ptr();
    let mut ctx = Context::detached("overlay", TextOverlay::descriptor());
    node.on_input("image", Message::new("cam", frame), &mut ctx).unwrap();
    let sent = ctx.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "image");
    match &sent[0].1.payload {
        Payload::Image(img) => assert_eq!(img.data.as_ptr(), ptr, "no copy when there is nothing to draw"),
        other => panic!("{other:?}"),
    }
}
