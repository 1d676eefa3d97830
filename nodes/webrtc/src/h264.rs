//! H.264 encoding of RGB8 frames with OpenH264 (built from its bundled source), in the
//! constrained-baseline form browsers decode over WebRTC (`profile-level-id=42e01f`,
//! `packetization-mode=1`).

use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile, RateControlMode, UsageType,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use openh264::OpenH264API;
use vela_runtime::Image;

/// One encoded access unit (Annex-B byte stream: start codes + NAL units).
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
    pub width: u32,
    pub height: u32,
}

/// An encoder that follows the input's size: a size change starts a fresh stream
/// (new SPS/PPS and an IDR frame). Odd widths or heights lose their last column or row,
/// since 4:2:0 needs even dimensions.
pub struct H264Encoder {
    bitrate_bps: u32,
    max_fps: f32,
    keyframe_interval: u32,
    inner: Option<(Encoder, u32, u32)>,
    yuv: Option<YUVBuffer>,
    crop: Vec<u8>,
    force_key: bool,
}

impl H264Encoder {
    pub fn new(bitrate_bps: u32, max_fps: f32, keyframe_interval: u32) -> Self {
        H264Encoder { bitrate_bps, max_fps, keyframe_interval, inner: None, yuv: None, crop: Vec::new(), force_key: false }
    }

    /// Takes effect at the next frame, by restarting the stream with a keyframe.
    pub fn set_bitrate(&mut self, bps: u32) {
        if bps != self.bitrate_bps {
            self.bitrate_bps = bps;
            self.inner = None;
        }
    }

    pub fn bitrate(&self) -> u32 {
        self.bitrate_bps
    }

    pub fn request_keyframe(&mut self) {
        self.force_key = true;
    }

    fn config(&self) -> EncoderConfig {
        EncoderConfig::new()
            .bitrate(BitRate::from_bps(self.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(self.max_fps))
            .rate_control_mode(RateControlMode::Bitrate)
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            // Bit-rate control needs the encoder to be free to skip a frame; skipped
            // frames come back as `Ok(None)` and the viewer just waits for the next one.
            .skip_frames(true)
            .intra_frame_period(IntraFramePeriod::from_num_frames(self.keyframe_interval))
            .num_threads(1)
    }

    /// Encodes one frame. `Ok(None)` if the encoder chose to skip it.
    pub fn encode(&mut self, img: &Image) -> Result<Option<EncodedFrame>, String> {
        let (w, h) = (img.width & !1, img.height & !1);
        if w < 2 || h < 2 {
            return Err(format!("frame {}x{} is too small to encode", img.width, img.height));
        }
        let rgb: &[u8] = if (w, h) == (img.width, img.height) {
            &img.data
        } else {
            self.crop.clear();
            let row = img.width as usize * 3;
            for y in 0..h as usize {
                self.crop.extend_from_slice(&img.data[y * row..y * row + w as usize * 3]);
            }
            &self.crop
        };
        if !matches!(&self.inner, Some((_, ew, eh)) if (*ew, *eh) == (w, h)) {
            let enc = Encoder::with_api_config(OpenH264API::from_source(), self.config())
                .map_err(|e| format!("cannot start the H.264 encoder: {e}"))?;
            self.inner = Some((enc, w, h));
            self.yuv = Some(YUVBuffer::new(w as usize, h as usize));
            self.force_key = false;
        }
        let yuv = self.yuv.as_mut().expect("set with the encoder");
        yuv.read_rgb8(RgbSliceU8::new(rgb, (w as usize, h as usize)));
        let (enc, _, _) = self.inner.as_mut().expect("just set");
        if std::mem::take(&mut self.force_key) {
            enc.force_intra_frame();
        }
        let bs = enc.encode(&*yuv).map_err(|e| format!("H.264 encoding failed: {e}"))?;
        let keyframe = matches!(bs.frame_type(), FrameType::IDR | FrameType::I);
        if matches!(bs.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        let data = bs.to_vec();
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedFrame { data, keyframe, width: w, height: h }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vela_runtime::builtin::TestPattern;

    fn frame(w: u32, h: u32, n: u64) -> Image {
        Image::rgb8(w, h, TestPattern::render(w, h, n)).unwrap()
    }

    /// NAL unit types in an Annex-B stream.
    fn nal_types(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 3 < data.len() {
            if data[i..i + 3] == [0, 0, 1] {
                out.push(data[i + 3] & 0x1f);
                i += 3;
            } else {
                i += 1;
            }
        }
        out
    }

    #[test]
    fn encodes_baseline_and_follows_the_size() {
        let mut enc = H264Encoder::new(1_000_000, 30.0, 60);
        for (w, h) in [(224, 224), (512, 512), (225, 123)] {
            let first = enc.encode(&frame(w, h, 0)).unwrap().expect("first frame is encoded");
            assert!(first.keyframe, "a new size starts with a keyframe");
            assert_eq!((first.width, first.height), (w & !1, h & !1));
            let types = nal_types(&first.data);
            assert!(types.contains(&7) && types.contains(&8) && types.contains(&5), "SPS, PPS, IDR: {types:?}");
            // SPS: profile_idc 66 (baseline) right after the NAL header.
            let sps = first.data.windows(4).position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 7).unwrap();
            assert_eq!(first.data[sps + 4], 66, "baseline profile");
            let next = enc.encode(&frame(w, h, 1)).unwrap().expect("second frame");
            assert!(!next.keyframe, "then predicted frames");
        }
        enc.request_keyframe();
        assert!(enc.encode(&frame(225, 123, 2)).unwrap().unwrap().keyframe);
        assert!(enc.encode(&frame(2, 1, 0)).is_err());
    }
}
