//! Key names of original Stability (SGM / "single-file") SDXL checkpoints, mapped from the
//! diffusers names our models use (SDXL-FACTS.md "SGM single-file key names"; verified against
//! diffusers' own converter by the parity fixtures).

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
}
