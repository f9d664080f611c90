//! Key names of original Stability (SGM / "single-file") SDXL checkpoints, mapped from the
//! diffusers names our models use (SDXL-FACTS.md "SGM single-file key names"; verified against
//! diffusers' own converter by the parity fixtures), and the maps of the other single-file
//! components: the VAE (LDM names) and both text encoders (transformers / OpenCLIP names), checked
//! against diffusers' `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint` and
//! `convert_open_clip_checkpoint` by `tools/parity/gen_single_file.py`.

use super::store::TensorSource;

/// Prefix of the UNet inside a single-file SDXL checkpoint.
pub const UNET_PREFIX: &str = "model.diffusion_model.";

fn resnet_part(rest: &str) -> String {
    const MAP: [(&str, &str); 6] = [
        ("norm1", "in_layers.0"),
        ("conv1", "in_layers.2"),
        ("norm2", "out_layers.0"),
        ("conv2", "out_layers.3"),
        ("time_emb_proj", "emb_layers.1"),
        ("conv_shortcut", "skip_connection"),
    ];
    for (from, to) in MAP {
        if let Some(tail) = rest.strip_prefix(from) {
            return format!("{to}{tail}");
        }
    }
    rest.to_string()
}

/// Splits `"3.rest"` into `(3, "rest")`.
fn index_and_rest(s: &str) -> Option<(usize, &str)> {
    let (idx, rest) = s.split_once('.')?;
    Some((idx.parse().ok()?, rest))
}

/// Maps a diffusers UNet key to its SGM name (with [`UNET_PREFIX`]). `layers_per_block` is the
/// UNet config's (2 for SDXL); `up_block_has_attention[i]` tells whether up block `i` has
/// attentions (its upsampler then sits at sub-index 2 instead of 1).
pub fn unet_key_to_sgm(name: &str, layers_per_block: usize, up_block_has_attention: &[bool]) -> String {
    let n = layers_per_block + 1;
    let mapped = (|| -> Option<String> {
        const FIXED: [(&str, &str); 7] = [
            ("time_embedding.linear_1", "time_embed.0"),
            ("time_embedding.linear_2", "time_embed.2"),
            ("add_embedding.linear_1", "label_emb.0.0"),
            ("add_embedding.linear_2", "label_emb.0.2"),
            ("conv_in", "input_blocks.0.0"),
            ("conv_norm_out", "out.0"),
            ("conv_out", "out.2"),
        ];
        for (from, to) in FIXED {
            if let Some(tail) = name.strip_prefix(from) {
                if tail.starts_with('.') {
                    return Some(format!("{to}{tail}"));
                }
            }
        }
        if let Some(rest) = name.strip_prefix("down_blocks.") {
            let (i, rest) = index_and_rest(rest)?;
            if let Some(r) = rest.strip_prefix("resnets.") {
                let (j, tail) = index_and_rest(r)?;
                return Some(format!("input_blocks.{}.0.{}", n * i + j + 1, resnet_part(tail)));
            }
            if let Some(r) = rest.strip_prefix("attentions.") {
                let (j, tail) = index_and_rest(r)?;
                return Some(format!("input_blocks.{}.1.{tail}", n * i + j + 1));
            }
            if let Some(tail) = rest.strip_prefix("downsamplers.0.conv.") {
                return Some(format!("input_blocks.{}.0.op.{tail}", n * (i + 1)));
            }
        }
        if let Some(rest) = name.strip_prefix("mid_block.") {
            if let Some(tail) = rest.strip_prefix("resnets.0.") {
                return Some(format!("middle_block.0.{}", resnet_part(tail)));
            }
            if let Some(tail) = rest.strip_prefix("attentions.0.") {
                return Some(format!("middle_block.1.{tail}"));
            }
            if let Some(tail) = rest.strip_prefix("resnets.1.") {
                return Some(format!("middle_block.2.{}", resnet_part(tail)));
            }
        }
        if let Some(rest) = name.strip_prefix("up_blocks.") {
            let (i, rest) = index_and_rest(rest)?;
            if let Some(r) = rest.strip_prefix("resnets.") {
                let (j, tail) = index_and_rest(r)?;
                return Some(format!("output_blocks.{}.0.{}", n * i + j, resnet_part(tail)));
            }
            if let Some(r) = rest.strip_prefix("attentions.") {
                let (j, tail) = index_and_rest(r)?;
                return Some(format!("output_blocks.{}.1.{tail}", n * i + j));
            }
            if let Some(tail) = rest.strip_prefix("upsamplers.0.conv.") {
                let sub = if up_block_has_attention.get(i).copied().unwrap_or(false) { 2 } else { 1 };
                return Some(format!("output_blocks.{}.{sub}.conv.{tail}", n * i + n - 1));
            }
        }
        None
    })();
    format!("{UNET_PREFIX}{}", mapped.unwrap_or_else(|| name.to_string()))
}

/// Prefix of the VAE (original LDM `AutoencoderKL` names) inside a single-file SDXL checkpoint.
pub const VAE_PREFIX: &str = "first_stage_model.";
/// Prefix of text encoder 1 (CLIP-L, transformers names) inside a single-file SDXL checkpoint.
pub const CLIP_L_PREFIX: &str = "conditioner.embedders.0.transformer.";
/// Prefix of text encoder 2 (OpenCLIP bigG, OpenCLIP names) inside a single-file SDXL checkpoint.
pub const CLIP_G_PREFIX: &str = "conditioner.embedders.1.model.";

/// LDM renames only the resnet shortcut (`norm1/conv1/norm2/conv2` keep their names).
fn vae_resnet_part(rest: &str) -> String {
    match rest.strip_prefix("conv_shortcut") {
        Some(tail) => format!("nin_shortcut{tail}"),
        None => rest.to_string(),
    }
}

/// The mid-block attention's LDM names (a 1x1-conv attention: `norm`, `q`, `k`, `v`, `proj_out`).
const VAE_ATTENTION: [(&str, &str); 5] =
    [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")];

/// Maps a diffusers `AutoencoderKL` key to its LDM name (with [`VAE_PREFIX`]). `num_up_blocks` is
/// `len(block_out_channels)` (4 for SDXL): LDM numbers the decoder levels from the lowest
/// resolution up (`decoder.up.{n-1-i}` is diffusers' `up_blocks.{i}`), the encoder the same way.
pub fn vae_key_to_sgm(name: &str, num_up_blocks: usize) -> String {
    let mapped = (|| -> Option<String> {
        let (half, rest) = name.split_once('.')?;
        if half != "encoder" && half != "decoder" {
            return None; // quant_conv / post_quant_conv keep their names
        }
        if let Some(tail) = rest.strip_prefix("conv_norm_out.") {
            return Some(format!("{half}.norm_out.{tail}"));
        }
        if let Some(r) = rest.strip_prefix("down_blocks.") {
            let (i, r) = index_and_rest(r)?;
            if let Some(r) = r.strip_prefix("resnets.") {
                let (j, tail) = index_and_rest(r)?;
                return Some(format!("{half}.down.{i}.block.{j}.{}", vae_resnet_part(tail)));
            }
            let tail = r.strip_prefix("downsamplers.0.conv.")?;
            return Some(format!("{half}.down.{i}.downsample.conv.{tail}"));
        }
        if let Some(r) = rest.strip_prefix("up_blocks.") {
            let (i, r) = index_and_rest(r)?;
            let level = num_up_blocks.checked_sub(i + 1)?;
            if let Some(r) = r.strip_prefix("resnets.") {
                let (j, tail) = index_and_rest(r)?;
                return Some(format!("{half}.up.{level}.block.{j}.{}", vae_resnet_part(tail)));
            }
            let tail = r.strip_prefix("upsamplers.0.conv.")?;
            return Some(format!("{half}.up.{level}.upsample.conv.{tail}"));
        }
        if let Some(r) = rest.strip_prefix("mid_block.resnets.") {
            let (k, tail) = index_and_rest(r)?;
            return Some(format!("{half}.mid.block_{}.{}", k + 1, vae_resnet_part(tail)));
        }
        let r = rest.strip_prefix("mid_block.attentions.0.")?;
        // The legacy diffusers names (query/key/value/proj_attn) have no LDM counterpart of their own.
        VAE_ATTENTION
            .iter()
            .find_map(|(from, to)| r.strip_prefix(from).map(|tail| format!("{half}.mid.attn_1.{to}{tail}")))
    })();
    format!("{VAE_PREFIX}{}", mapped.unwrap_or_else(|| name.to_string()))
}

/// [`vae_key_to_sgm`] as a [`TensorSource`]: the attention projections are `[C, C, 1, 1]` 1x1
/// convolutions in LDM files and `[C, C]` linears in diffusers, so they may be reshaped.
pub fn vae_tensor_source(name: &str, num_up_blocks: usize) -> TensorSource {
    let sgm = vae_key_to_sgm(name, num_up_blocks);
    let is_attn_weight = sgm.contains(".mid.attn_1.") && sgm.ends_with(".weight") && !sgm.contains(".norm.");
    let src = TensorSource::new(sgm);
    if is_attn_weight {
        src.fit_unit_dims()
    } else {
        src
    }
}

/// Maps a transformers CLIP-L key (`text_model.…`) to its single-file name: SGM keeps the
/// transformers names under [`CLIP_L_PREFIX`].
pub fn clip_l_key_to_sgm(name: &str) -> String {
    format!("{CLIP_L_PREFIX}{name}")
}

/// Per-layer OpenCLIP names (after `transformer.resblocks.N.`) of transformers' CLIP layer names.
const OPENCLIP_LAYER: [(&str, &str); 5] = [
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("self_attn.out_proj.", "attn.out_proj."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
];

/// Where a transformers `CLIPTextModelWithProjection` tensor (SDXL text encoder 2) lives in an
/// OpenCLIP bigG single file (under [`CLIP_G_PREFIX`]); `None` for names OpenCLIP has no tensor for.
///
/// - q/k/v projections are the thirds (rows) of the fused `attn.in_proj_weight` / `in_proj_bias`
///   (`nn.MultiheadAttention` stacks q, k, v along dim 0);
/// - `text_projection.weight` `[proj, hidden]` is OpenCLIP's `text_projection` `[hidden, proj]`
///   transposed (OpenCLIP computes `x @ text_projection`);
/// - `positional_embedding` is a raw parameter (no `.weight`).
pub fn clip_g_tensor_source(name: &str) -> Option<TensorSource> {
    let at = |s: &str| TensorSource::new(format!("{CLIP_G_PREFIX}{s}"));
    match name {
        "text_model.embeddings.token_embedding.weight" => return Some(at("token_embedding.weight")),
        "text_model.embeddings.position_embedding.weight" => return Some(at("positional_embedding")),
        "text_projection.weight" => return Some(at("text_projection").transposed()),
        _ => {}
    }
    if let Some(tail) = name.strip_prefix("text_model.final_layer_norm.") {
        return Some(at(&format!("ln_final.{tail}")));
    }
    let (n, rest) = index_and_rest(name.strip_prefix("text_model.encoder.layers.")?)?;
    let block = format!("transformer.resblocks.{n}.");
    if let Some(r) = rest.strip_prefix("self_attn.") {
        for (part, proj) in ["q_proj.", "k_proj.", "v_proj."].into_iter().enumerate() {
            let fused = match r.strip_prefix(proj) {
                Some("weight") => "in_proj_weight",
                Some("bias") => "in_proj_bias",
                Some(_) => return None,
                None => continue,
            };
            return Some(at(&format!("{block}attn.{fused}")).chunk(part, 3));
        }
    }
    OPENCLIP_LAYER.iter().find_map(|(from, to)| rest.strip_prefix(from).map(|tail| at(&format!("{block}{to}{tail}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdxl_names_follow_the_published_table() {
        let attn = [true, true, false];
        let m = |s: &str| unet_key_to_sgm(s, 2, &attn);
        assert_eq!(m("conv_in.weight"), "model.diffusion_model.input_blocks.0.0.weight");
        assert_eq!(m("add_embedding.linear_2.bias"), "model.diffusion_model.label_emb.0.2.bias");
        assert_eq!(
            m("down_blocks.1.resnets.1.conv_shortcut.weight"),
            "model.diffusion_model.input_blocks.5.0.skip_connection.weight"
        );
        assert_eq!(
            m("down_blocks.2.attentions.0.proj_in.weight"),
            "model.diffusion_model.input_blocks.7.1.proj_in.weight"
        );
        assert_eq!(m("down_blocks.0.downsamplers.0.conv.weight"), "model.diffusion_model.input_blocks.3.0.op.weight");
        assert_eq!(
            m("mid_block.resnets.1.time_emb_proj.bias"),
            "model.diffusion_model.middle_block.2.emb_layers.1.bias"
        );
        assert_eq!(
            m("up_blocks.0.resnets.2.norm2.weight"),
            "model.diffusion_model.output_blocks.2.0.out_layers.0.weight"
        );
        assert_eq!(m("up_blocks.0.upsamplers.0.conv.weight"), "model.diffusion_model.output_blocks.2.2.conv.weight");
        assert_eq!(
            m("up_blocks.1.attentions.2.transformer_blocks.1.attn2.to_k.weight"),
            "model.diffusion_model.output_blocks.5.1.transformer_blocks.1.attn2.to_k.weight"
        );
        assert_eq!(m("conv_out.bias"), "model.diffusion_model.out.2.bias");
    }

    #[test]
    fn vae_names_follow_ldm() {
        let m = |s: &str| vae_key_to_sgm(s, 4);
        assert_eq!(m("post_quant_conv.weight"), "first_stage_model.post_quant_conv.weight");
        assert_eq!(m("decoder.conv_norm_out.bias"), "first_stage_model.decoder.norm_out.bias");
        assert_eq!(
            m("decoder.up_blocks.0.resnets.2.conv1.weight"),
            "first_stage_model.decoder.up.3.block.2.conv1.weight"
        );
        assert_eq!(
            m("decoder.up_blocks.3.resnets.0.conv_shortcut.weight"),
            "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight"
        );
        assert_eq!(
            m("decoder.up_blocks.1.upsamplers.0.conv.bias"),
            "first_stage_model.decoder.up.2.upsample.conv.bias"
        );
        assert_eq!(
            m("encoder.down_blocks.1.downsamplers.0.conv.weight"),
            "first_stage_model.encoder.down.1.downsample.conv.weight"
        );
        assert_eq!(m("decoder.mid_block.resnets.1.norm2.weight"), "first_stage_model.decoder.mid.block_2.norm2.weight");
        assert_eq!(
            m("decoder.mid_block.attentions.0.to_out.0.weight"),
            "first_stage_model.decoder.mid.attn_1.proj_out.weight"
        );
        assert_eq!(
            m("decoder.mid_block.attentions.0.group_norm.bias"),
            "first_stage_model.decoder.mid.attn_1.norm.bias"
        );
        assert!(vae_tensor_source("decoder.mid_block.attentions.0.to_q.weight", 4).fit_unit_dims);
        assert!(!vae_tensor_source("decoder.mid_block.attentions.0.group_norm.weight", 4).fit_unit_dims);
    }

    #[test]
    fn open_clip_names_fuse_and_transpose() {
        let g = |s: &str| clip_g_tensor_source(s).expect("mapped");
        let p = "conditioner.embedders.1.model.";
        assert_eq!(g("text_model.embeddings.position_embedding.weight").name, format!("{p}positional_embedding"));
        let proj = g("text_projection.weight");
        assert_eq!((proj.name.as_str(), proj.transpose), (&*format!("{p}text_projection"), true));
        let v = g("text_model.encoder.layers.7.self_attn.v_proj.bias");
        assert_eq!(v.name, format!("{p}transformer.resblocks.7.attn.in_proj_bias"));
        assert_eq!(v.chunk, Some(crate::weights::store::Chunk { index: 2, count: 3 }));
        assert_eq!(
            g("text_model.encoder.layers.0.mlp.fc2.weight").name,
            format!("{p}transformer.resblocks.0.mlp.c_proj.weight")
        );
        assert_eq!(g("text_model.final_layer_norm.weight").name, format!("{p}ln_final.weight"));
        assert!(clip_g_tensor_source("text_model.encoder.layers.0.self_attn.q_proj.scale").is_none());
        assert!(clip_g_tensor_source("logit_scale").is_none());
        assert_eq!(
            clip_l_key_to_sgm("text_model.final_layer_norm.bias"),
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.bias"
        );
    }
}
