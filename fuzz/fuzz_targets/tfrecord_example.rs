//! Fuzzes what reading an RLDS shard does with untrusted bytes: TFRecord
//! framing, the tf.train.Example decoder and the episode mapping (JPEG
//! decoding included). Any panic is a bug; errors are fine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vela_data::{rlds, tfrecord};

fuzz_target!(|data: &[u8]| {
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
