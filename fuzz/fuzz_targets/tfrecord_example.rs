//! Fuzzes what reading an RLDS shard does with untrusted bytes: TFRecord
//! framing, the tf.train.Example decoder and the episode mapping (JPEG
//! decoding included). Any panic is a bug; errors are fine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vela_data::{rlds, tfrecord};

/// libFuzzer's panic hook aborts on any panic. Panics raised inside zune-jpeg (its overflow
/// checks, on in fuzz builds) are caught by `decode_jpeg` and become errors, so they are let
/// through to unwind; every other panic still aborts and counts as a crash.
fn let_decoder_panics_unwind() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.location().is_some_and(|l| l.file().contains("zune-jpeg")) {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    let_decoder_panics_unwind();
    // The input as a record body: Example + episode decoding.
    let _ = rlds::decode_episode(data);
    // The input as a shard: framing must reject or split it cleanly.
    if let Ok(records) = tfrecord::parse_records(data) {
        for r in records {
            let _ = rlds::decode_episode(r);
        }
    }
    // Framing what we were given and parsing it back is the identity.
    let mut framed = Vec::new();
    tfrecord::write_record(&mut framed, data).unwrap();
    assert_eq!(tfrecord::parse_records(&framed).unwrap(), vec![data]);
});
