//! LoRA + decoupled IP cross-attention processors (spec §3.2–3.4) and the `ip_adapter.{k}.*` key
//! numbering of `mask.bin` (spec §4.3).
//!
//! * every projection: `proj'(x) = proj(x) + lora_scale · up(down(x))` (no alpha/rank factor);
//! * cross-attention: the context is split at 77 tokens; text tokens go through `to_k`/`to_v`
//!   (with LoRA), image tokens through `to_k_ip`/`to_v_ip` (no LoRA); one shared query;
//!   `Z = Z_text + ip_scale · Z_image`, then `to_out` (with LoRA).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use candle_core::{Module, Result, Tensor};
use candle_nn::{linear_no_bias, Linear, VarBuilder};

use crate::models::attention::{merge_heads, sdpa, split_heads_view, AttentionExtension, Proj};
use crate::models::unet::{UNet2DConditionModel, UNetConfig};

/// Text tokens before the image tokens in the cross-attention context (hard-coded by the
/// reference processor, spec §3.4 step 2).
pub const TEXT_TOKENS: usize = 77;

/// `ip_scale` and `lora_scale`, shared by all 140 processors and changeable between
/// generations without rebuilding anything (defaults 0.8 / 0.8, spec §3.4).
#[derive(Debug)]
pub struct AdapterScales {
    ip: AtomicU32,
    lora: AtomicU32,
}

impl Default for AdapterScales {
    fn default() -> Self {
        AdapterScales { ip: AtomicU32::new(0.8f32.to_bits()), lora: AtomicU32::new(0.8f32.to_bits()) }
    }
}

impl AdapterScales {
    pub fn set(&self, ip: f32, lora: f32) {
        self.ip.store(ip.to_bits(), Ordering::Relaxed);
        self.lora.store(lora.to_bits(), Ordering::Relaxed);
    }

    pub fn ip(&self) -> f32 {
        f32::from_bits(self.ip.load(Ordering::Relaxed))
    }

    pub fn lora(&self) -> f32 {
        f32::from_bits(self.lora.load(Ordering::Relaxed))
    }
}

/// `down` `[r, in]` then `up` `[out, r]`; the rank comes from the weights.
struct Lora {
    down: Linear,
    up: Linear,
}

impl Lora {
    fn new(vb: VarBuilder, input: usize, output: usize) -> Result<Lora> {
        let rank = vb.pp("down").get_unchecked("weight")?.dim(0)?;
        Ok(Lora { down: linear_no_bias(input, rank, vb.pp("down"))?, up: linear_no_bias(rank, output, vb.pp("up"))? })
    }

    fn delta(&self, x: &Tensor) -> Result<Tensor> {
        self.up.forward(&self.down.forward(x)?)
    }
}

/// One attention processor: LoRA on q/k/v/out, and for cross-attention the image branch.
pub struct StoryMakerAttention {
    q: Lora,
    k: Lora,
    v: Lora,
    out: Lora,
    ip: Option<(Linear, Linear)>,
    scales: Arc<AdapterScales>,
}

impl StoryMakerAttention {
    /// `vb` at `ip_adapter.{k}`; `hidden` = the attention width, `context` = cross-attention
    /// context width for attn2 (`None` for self-attention).
    pub fn new(vb: VarBuilder, hidden: usize, context: Option<usize>, scales: Arc<AdapterScales>) -> Result<Self> {
        let kv_in = context.unwrap_or(hidden);
        let ip = match context {
            Some(c) => {
                Some((linear_no_bias(c, hidden, vb.pp("to_k_ip"))?, linear_no_bias(c, hidden, vb.pp("to_v_ip"))?))
            }
            None => None,
        };
        Ok(StoryMakerAttention {
            q: Lora::new(vb.pp("to_q_lora"), hidden, hidden)?,
            k: Lora::new(vb.pp("to_k_lora"), kv_in, hidden)?,
            v: Lora::new(vb.pp("to_v_lora"), kv_in, hidden)?,
            out: Lora::new(vb.pp("to_out_lora"), hidden, hidden)?,
            ip,
            scales,
        })
    }
}

impl AttentionExtension for StoryMakerAttention {
    fn project(&self, which: Proj, x: &Tensor, base: Tensor) -> Result<Tensor> {
        let lora = match which {
            Proj::Q => &self.q,
            Proj::K => &self.k,
            Proj::V => &self.v,
            Proj::Out => &self.out,
        };
        let s = self.scales.lora() as f64;
        if s == 0.0 {
            return Ok(base);
        }
        // The LoRA branch runs in the weights' dtype (spec §3.2); cast back to the model's.
        let delta = lora.delta(&x.to_dtype(lora.down.weight().dtype())?)?.to_dtype(base.dtype())?;
        base + (delta * s)?
    }

    fn text_len(&self) -> Option<usize> {
        self.ip.as_ref().map(|_| TEXT_TOKENS)
    }

    fn extra_attention(&self, q: &Tensor, extra_ctx: &Tensor, heads: usize) -> Result<Option<Tensor>> {
        let Some((to_k, to_v)) = &self.ip else { return Ok(None) };
        let k = split_heads_view(&to_k.forward(extra_ctx)?, heads)?;
        let v = split_heads_view(&to_v.forward(extra_ctx)?, heads)?;
        // One softmax over all image tokens jointly (background + every character, §3.4 step 4).
        let z = merge_heads(&sdpa(q, &k, &v)?)?;
        Ok(Some((z * self.scales.ip() as f64)?))
    }
}

/// The UNet's attention modules in diffusers' `attn_processors` order (down blocks, up blocks,
/// then mid; attn1 before attn2), which numbers the `ip_adapter.{k}` keys (spec §4.3).
pub fn processor_names(cfg: &UNetConfig) -> Vec<String> {
    let n = cfg.block_out_channels.len();
    let mut names = Vec::new();
    let mut push_block = |prefix: String, depth: usize| {
        for t in 0..depth {
            for j in 1..=2 {
                names.push(format!("{prefix}.transformer_blocks.{t}.attn{j}"));
            }
        }
    };
    for i in 0..n {
        if cfg.down_block_types[i] == "CrossAttnDownBlock2D" {
            for a in 0..cfg.layers_per_block {
                push_block(format!("down_blocks.{i}.attentions.{a}"), cfg.transformer_layers_per_block.get(i));
            }
        }
    }
    for i in 0..n {
        if cfg.up_block_types[i] == "CrossAttnUpBlock2D" {
            let rev = n - 1 - i;
            for a in 0..=cfg.layers_per_block {
                push_block(format!("up_blocks.{i}.attentions.{a}"), cfg.transformer_layers_per_block.get(rev));
            }
        }
    }
    push_block("mid_block.attentions.0".into(), cfg.transformer_layers_per_block.get(n - 1));
    names
}

/// Attaches the processors read from `vb` (at the `ip_adapter` prefix) to every attention of
/// the UNet. Returns the number of processors attached.
pub fn attach_ip_adapter(unet: &mut UNet2DConditionModel, vb: VarBuilder, scales: Arc<AdapterScales>) -> Result<usize> {
    let cfg = unet.config().clone();
    let order = processor_names(&cfg);
    let mut attached = 0;
    for (name, block) in unet.transformer_blocks_mut() {
        for (j, attn) in [(1usize, &mut block.attn1), (2, &mut block.attn2)] {
            let full = format!("{name}.attn{j}");
            let k = order
                .iter()
                .position(|n| *n == full)
                .ok_or_else(|| candle_core::Error::Msg(format!("no adapter processor index for {full}")))?;
            let hidden = attn.inner_dim();
            let context = (j == 2).then_some(cfg.cross_attention_dim);
            let proc = StoryMakerAttention::new(vb.pp(k), hidden, context, scales.clone())?;
            attn.set_extension(Some(Box::new(proc)));
            attached += 1;
        }
    }
    Ok(attached)
}
