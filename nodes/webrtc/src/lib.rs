//! Browser media nodes of Vela.
//!
//! - [`VideoOutput`]: frames → H.264 (OpenH264, constrained baseline) → WebRTC, to every
//!   studio browser tab that asks; signalling rides on the studio WebSocket.
//! - [`WebAudioIn`]: a tab's microphone → Audio messages at the browser's real rate;
//!   PCM rides on the studio WebSocket as binary frames ([`audio_frame`]).
//!
//! Both meet the studio through the process-wide [`hub()`], keyed by node name. They
//! live in their own crate because WebRTC and OpenH264 are heavy to build; nodes/media
//! stays light.

mod audio;
pub mod audio_frame;
pub mod h264;
mod hub;
mod video;

pub use audio::{level_db, WebAudioIn};
pub use hub::{hub, ClientHandle, Hub};
pub use video::{draw_timestamp_stripe, VideoOutput, H264_FMTP};

/// The browser side, for the studio to serve.
pub mod web {
    /// The ES module (`StudioLink`, `playVideo`, `startMic`, `readTimestampStripe`).
    pub const MEDIA_JS: &str = include_str!("../web/vela-media.js");
    /// A standalone page that plays a VideoOutput and optionally sends the microphone.
    pub const TEST_PAGE: &str = include_str!("../web/media-test.html");
}

use vela_runtime::Registry;

pub fn register(r: &mut Registry) {
    r.register(VideoOutput::descriptor(), |init| Ok(Box::new(VideoOutput::new(init)?)));
    r.register(WebAudioIn::descriptor(), |init| Ok(Box::new(WebAudioIn::new(init)?)));
}
