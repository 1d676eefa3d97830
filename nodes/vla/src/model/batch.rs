//! Batched inference: several (image, instruction) requests in one forward pass, so
//! parallel simulators share one model and its matmuls get wider operands.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::Tensor;
use image::RgbImage;

use super::{ActionPrediction, OpenVla};
use crate::action::unnormalize;
use crate::llama::KvCache;
use crate::Result;

/// This thread's name in `vela_runtime::diag` stages; the batching thread uses it too, so one
/// entry shows both where it waits and how far into a batch it got.
pub(crate) fn stage_key() -> String {
    format!("openvla-batch {:?}", std::thread::current().id())
}

/// Marks this thread's stage for a watchdog's report.
pub(crate) fn mark(what: &str) {
    vela_runtime::diag::stage(&stage_key(), what);
}

impl OpenVla {
    /// One prediction per request, in order. Images encode as one batch; prompts with the
    /// same token count decode together (no padding, so attention needs no extra mask),
    /// other lengths in batches of their own.
    pub fn predict_actions_batch(&self, requests: &[(&RgbImage, &str)], action_space: &str) -> Result<Vec<ActionPrediction>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let t0 = Instant::now();
        mark("batch: pixel values");
        let pixels = requests
            .iter()
            .map(|(img, _)| self.pixel_values(img))
            .collect::<Result<Vec<_>>>()?;
        mark("batch: vision towers");
        let patches = self.encode_pixels(&Tensor::cat(&pixels, 0)?)?;
        let vision_ms = t0.elapsed().as_secs_f64() * 1e3;
        let ids: Vec<Vec<u32>> = requests.iter().map(|(_, instruction)| self.prompt_ids(instruction)).collect();
        let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (row, id) in ids.iter().enumerate() {
            by_len.entry(id.len()).or_default().push(row);
        }
        let mut out: Vec<Option<ActionPrediction>> = vec![None; requests.len()];
        for rows in by_len.values() {
            for (row, mut p) in rows.iter().zip(self.decode_rows(&patches, &ids, rows, action_space)?) {
                p.vision_ms = vision_ms;
                out[*row] = Some(p);
            }
        }
        Ok(out.into_iter().map(|p| p.expect("every row belongs to one length group")).collect())
    }

    /// Greedy decoding of `rows` (prompts of equal length) as one batch.
    fn decode_rows(&self, patches: &Tensor, ids: &[Vec<u32>], rows: &[usize], action_space: &str) -> Result<Vec<ActionPrediction>> {
        let (stats, dims) = self.space_stats(action_space)?;
        let t0 = Instant::now();
        let embeds = rows
            .iter()
            .map(|&r| {
                let id = &ids[r];
                Ok(Tensor::cat(&[&self.llm.embed(&id[..1])?, &patches.narrow(0, r, 1)?, &self.llm.embed(&id[1..])?], 1)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut cache = KvCache::new(self.config.text_config.num_hidden_layers);
        mark("batch: prefill");
        let mut logits = self.llm.forward_embeds_batch(&Tensor::cat(&embeds, 0)?, &mut cache)?;
        let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let mut tokens = vec![Vec::with_capacity(dims); rows.len()];
        let mut values = vec![Vec::with_capacity(dims); rows.len()];
        for d in 0..dims {
            // Reading the token back is where the host waits for the device.
            mark(&format!("batch: token {d} (reading it back from the device)"));
            let picked = self.pick_tokens(&logits)?;
            let next: Vec<u32> = picked.iter().map(|p| p.0).collect();
            for ((t, v), (tok, value)) in tokens.iter_mut().zip(values.iter_mut()).zip(picked) {
                t.push(tok);
                v.push(value);
            }
            if d + 1 < dims {
                let emb = self.llm.embed(&next)?.transpose(0, 1)?;
                logits = self.llm.forward_embeds_batch(&emb, &mut cache)?;
            }
        }
        let decode_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(rows
            .iter()
            .zip(tokens.into_iter().zip(values))
            .map(|(&r, (tokens, normalized))| {
                let action = match &stats {
                    Some(s) => unnormalize(&normalized, s),
                    None => normalized.clone(),
                };
                ActionPrediction { action, normalized, tokens, prompt_ids: ids[r].clone(), vision_ms: 0.0, prefill_ms, decode_ms }
            })
            .collect())
    }
}
