//! The node types this build of Vela ships. Each node family registers itself here
//! explicitly; families whose libraries or model files are missing register as
//! unavailable with a reason instead of failing start-up.

use vela_runtime::Registry;

pub fn build() -> Registry {
    let mut r = Registry::with_builtins();
    vela_prompt::register(&mut r);
    vela_media::register(&mut r);
    vela_vla::register(&mut r);
    vela_sim::register(&mut r);
    vela_speech::register(&mut r);
    vela_webrtc::register(&mut r);
    r
}
