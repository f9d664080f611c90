//! Loading SDXL from one single-file checkpoint (`sd_xl_base_1.0.safetensors`, the format most
//! people download) without converting it: the file is mapped once and each component gets a
//! VarBuilder whose tensor map reads the original Stability names in place.
//!
//! | component | prefix | names |
//! |---|---|---|
//! | UNet | `model.diffusion_model.` | SGM ([`unet_key_to_sgm`]) |
//! | VAE | `first_stage_model.` | LDM ([`vae_tensor_source`]) |
//! | text encoder 1 (CLIP-L) | `conditioner.embedders.0.transformer.` | transformers |
//! | text encoder 2 (OpenCLIP bigG) | `conditioner.embedders.1.model.` | OpenCLIP ([`clip_g_tensor_source`]) |
//!
//! The file holds no configs. The sizes of the text encoders and the VAE are read from tensor
//! shapes ([`SingleFileSdxl::text_encoder_config`], [`SingleFileSdxl::vae_config`]); what shapes
//! cannot tell (attention heads, activations, norm groups, scaling factor) comes from a base config,
//! normally the SDXL defaults (`ClipTextConfig::sdxl_clip_l`, `VaeConfig::sdxl`,
//! `UNetConfig::sdxl_base`). The maps are verified against diffusers' own single-file converters
//! by `tools/parity/gen_single_file.py` and `tests/parity_single_file.rs`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use thiserror::Error;

use super::sgm::{
    clip_g_tensor_source, clip_l_key_to_sgm, unet_key_to_sgm, vae_tensor_source, CLIP_G_PREFIX, CLIP_L_PREFIX,
    UNET_PREFIX, VAE_PREFIX,
};
use super::store::TensorStore;
use super::WeightsError;
use crate::models::clip_text::ClipTextConfig;
use crate::models::unet::UNetConfig;
use crate::models::vae::VaeConfig;

/// The four models inside a single-file SDXL checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdxlComponent {
    Unet,
    Vae,
    TextEncoder,
    TextEncoder2,
}

impl SdxlComponent {
    pub const ALL: [SdxlComponent; 4] =
        [SdxlComponent::Unet, SdxlComponent::Vae, SdxlComponent::TextEncoder, SdxlComponent::TextEncoder2];

    /// The prefix all of the component's tensor names start with.
    pub fn prefix(self) -> &'static str {
        match self {
            SdxlComponent::Unet => UNET_PREFIX,
            SdxlComponent::Vae => VAE_PREFIX,
            SdxlComponent::TextEncoder => CLIP_L_PREFIX,
            SdxlComponent::TextEncoder2 => CLIP_G_PREFIX,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SdxlComponent::Unet => "UNet",
            SdxlComponent::Vae => "VAE",
            SdxlComponent::TextEncoder => "text encoder 1 (CLIP-L)",
            SdxlComponent::TextEncoder2 => "text encoder 2 (OpenCLIP bigG)",
        }
    }
}

#[derive(Debug, Error)]
pub enum SingleFileError {
    #[error(transparent)]
    Open(#[from] WeightsError),
    #[error(
        "{path} has no {} (no tensor name starts with `{}`); a complete SDXL single-file checkpoint such as \
         sd_xl_base_1.0.safetensors holds the UNet, the VAE and both text encoders",
        component.label(),
        component.prefix()
    )]
    MissingComponent { path: String, component: SdxlComponent },
    #[error("{path}: cannot infer the {} configuration: {detail}", component.label())]
    Config { path: String, component: SdxlComponent, detail: String },
}

/// One opened single-file SDXL checkpoint.
pub struct SingleFileSdxl {
    path: PathBuf,
    store: TensorStore,
    /// Which of [`SdxlComponent::ALL`] have at least one tensor.
    present: [bool; 4],
}

/// Where a CLIP text tower's size-bearing tensors are, in one of the two naming schemes.
struct ClipLayout {
    component: SdxlComponent,
    token_embedding: String,
    position_embedding: String,
    /// `<prefix>N.` are the layers.
    layers: String,
    /// The MLP's first linear inside a layer (`[intermediate, hidden]`).
    fc1: &'static str,
    /// The projection, stored `[hidden, projection_dim]` (OpenCLIP), if the tower has one.
    projection: Option<String>,
}

impl SingleFileSdxl {
    /// Maps the file and notes which components it holds (nothing is loaded yet).
    pub fn open(path: &Path) -> Result<SingleFileSdxl, SingleFileError> {
        let store = TensorStore::open(&[path.to_path_buf()])?;
        let present = SdxlComponent::ALL.map(|c| store.names().any(|n| n.starts_with(c.prefix())));
        Ok(SingleFileSdxl { path: path.to_path_buf(), store, present })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's tensors under their stored names (no map).
    pub fn store(&self) -> &TensorStore {
        &self.store
    }

    pub fn has(&self, component: SdxlComponent) -> bool {
        // The enum's discriminants are its positions in `ALL`.
        self.present[component as usize]
    }

    /// The components the file lacks (so the UI can say what to add before loading anything).
    pub fn missing(&self) -> Vec<SdxlComponent> {
        SdxlComponent::ALL.into_iter().filter(|&c| !self.has(c)).collect()
    }

    fn require(&self, component: SdxlComponent) -> Result<(), SingleFileError> {
        if self.has(component) {
            Ok(())
        } else {
            Err(SingleFileError::MissingComponent { path: self.path.display().to_string(), component })
        }
    }

    /// The UNet under diffusers names. `cfg` cannot be read from the file (use
    /// `UNetConfig::sdxl_base()` for SDXL); the map needs its `layers_per_block` and up block types.
    pub fn unet(&self, cfg: &UNetConfig, dtype: DType, dev: &Device) -> Result<VarBuilder<'static>, SingleFileError> {
        Ok(self.unet_store(cfg)?.into_var_builder(dtype, dev))
    }

    /// The store behind [`Self::unet`] (style LoRAs are merged on top of it).
    pub fn unet_store(&self, cfg: &UNetConfig) -> Result<TensorStore, SingleFileError> {
        self.require(SdxlComponent::Unet)?;
        let attn: Vec<bool> = cfg.up_block_types.iter().map(|t| t == "CrossAttnUpBlock2D").collect();
        let lpb = cfg.layers_per_block;
        Ok(self.store.unmapped().with_key_map(move |k| unet_key_to_sgm(k, lpb, &attn)))
    }

    /// The VAE under diffusers `AutoencoderKL` names (for `AutoencoderKlDecoder`); `cfg` gives the
    /// number of levels, which the LDM decoder numbering reverses (see [`Self::vae_config`]).
    pub fn vae(&self, cfg: &VaeConfig, dtype: DType, dev: &Device) -> Result<VarBuilder<'static>, SingleFileError> {
        self.require(SdxlComponent::Vae)?;
        let levels = cfg.block_out_channels.len();
        Ok(self
            .store
            .unmapped()
            .with_tensor_map(move |k| Some(vae_tensor_source(k, levels)))
            .into_var_builder(dtype, dev))
    }

    /// Text encoder 1 (CLIP-L) under transformers `CLIPTextModel` names.
    pub fn text_encoder(&self, dtype: DType, dev: &Device) -> Result<VarBuilder<'static>, SingleFileError> {
        Ok(self.text_encoder_store()?.into_var_builder(dtype, dev))
    }

    /// The store behind [`Self::text_encoder`].
    pub fn text_encoder_store(&self) -> Result<TensorStore, SingleFileError> {
        self.require(SdxlComponent::TextEncoder)?;
        Ok(self.store.unmapped().with_key_map(clip_l_key_to_sgm))
    }

    /// Text encoder 2 (OpenCLIP bigG) under transformers `CLIPTextModelWithProjection` names: q/k/v
    /// are sliced out of the fused `in_proj_weight`, `text_projection` is transposed.
    pub fn text_encoder_2(&self, dtype: DType, dev: &Device) -> Result<VarBuilder<'static>, SingleFileError> {
        Ok(self.text_encoder_2_store()?.into_var_builder(dtype, dev))
    }

    /// The store behind [`Self::text_encoder_2`].
    pub fn text_encoder_2_store(&self) -> Result<TensorStore, SingleFileError> {
        self.require(SdxlComponent::TextEncoder2)?;
        Ok(self.store.unmapped().with_tensor_map(clip_g_tensor_source))
    }

    /// `base` with the sizes of text encoder 1 read from the file: vocabulary, hidden and MLP
    /// width, layers, positions. Heads, activation, eps, EOS rule and projection_dim stay `base`'s.
    pub fn text_encoder_config(&self, base: &ClipTextConfig) -> Result<ClipTextConfig, SingleFileError> {
        let p = format!("{CLIP_L_PREFIX}text_model.");
        self.infer_clip(
            &ClipLayout {
                component: SdxlComponent::TextEncoder,
                token_embedding: format!("{p}embeddings.token_embedding.weight"),
                position_embedding: format!("{p}embeddings.position_embedding.weight"),
                layers: format!("{p}encoder.layers."),
                fc1: "mlp.fc1.weight",
                projection: None,
            },
            base,
        )
    }

    /// Like [`Self::text_encoder_config`] for text encoder 2, whose `projection_dim` is read from
    /// `text_projection` too.
    pub fn text_encoder_2_config(&self, base: &ClipTextConfig) -> Result<ClipTextConfig, SingleFileError> {
        let p = CLIP_G_PREFIX;
        self.infer_clip(
            &ClipLayout {
                component: SdxlComponent::TextEncoder2,
                token_embedding: format!("{p}token_embedding.weight"),
                position_embedding: format!("{p}positional_embedding"),
                layers: format!("{p}transformer.resblocks."),
                fc1: "mlp.c_fc.weight",
                projection: Some(format!("{p}text_projection")),
            },
            base,
        )
    }

    /// `base` with the VAE's sizes read from the file: `block_out_channels` (LDM `decoder.up.N`
    /// is level N from the full resolution), `layers_per_block`, latent/in/out channels, and
    /// whether the mid-block attention and `post_quant_conv` exist. Norm groups, scaling factor,
    /// `force_upcast` and latent statistics stay `base`'s.
    pub fn vae_config(&self, base: &VaeConfig) -> Result<VaeConfig, SingleFileError> {
        let c = SdxlComponent::Vae;
        self.require(c)?;
        let name = |s: &str| format!("{VAE_PREFIX}{s}");
        let levels = self.count_indexed(&name("decoder.up."));
        let blocks = self.count_indexed(&name("decoder.up.0.block."));
        if levels == 0 || blocks == 0 {
            return Err(self.config_error(c, format!("no decoder levels ({VAE_PREFIX}decoder.up.N.block.M)")));
        }
        let block_out_channels = (0..levels)
            .map(|n| Ok(self.dims(c, &name(&format!("decoder.up.{n}.block.0.conv2.weight")))?[0]))
            .collect::<Result<Vec<_>, SingleFileError>>()?;
        let latent_channels = self.dims(c, &name("decoder.conv_in.weight"))?.get(1).copied().unwrap_or(0);
        let out_channels = self.dims(c, &name("decoder.conv_out.weight"))?[0];
        let in_channels = match self.store.shape(&name("encoder.conv_in.weight")) {
            Some([_, cin, ..]) => *cin,
            _ => base.in_channels,
        };
        Ok(VaeConfig {
            in_channels,
            out_channels,
            block_out_channels,
            layers_per_block: blocks - 1,
            latent_channels,
            mid_block_add_attention: self.store.contains(&name("decoder.mid.attn_1.q.weight")),
            use_post_quant_conv: self.store.contains(&name("post_quant_conv.weight")),
            ..base.clone()
        })
    }

    fn infer_clip(&self, l: &ClipLayout, base: &ClipTextConfig) -> Result<ClipTextConfig, SingleFileError> {
        let c = l.component;
        self.require(c)?;
        let (vocab_size, hidden) = self.dims2(c, &l.token_embedding)?;
        let (max_positions, h) = self.dims2(c, &l.position_embedding)?;
        self.same_width(c, &l.position_embedding, h, hidden)?;
        let layers = self.count_indexed(&l.layers);
        if layers == 0 {
            return Err(self.config_error(c, format!("no layers ({}N.)", l.layers)));
        }
        let fc1 = format!("{}0.{}", l.layers, l.fc1);
        let (intermediate, h) = self.dims2(c, &fc1)?;
        self.same_width(c, &fc1, h, hidden)?;
        let projection_dim = match &l.projection {
            Some(p) => {
                let (h, proj) = self.dims2(c, p)?;
                self.same_width(c, p, h, hidden)?;
                proj
            }
            None => base.projection_dim,
        };
        let heads = base.num_attention_heads;
        if heads == 0 || hidden % heads != 0 {
            return Err(self.config_error(
                c,
                format!(
                    "hidden size {hidden} is not a multiple of the given {heads} attention heads (heads are not \
                     stored in the checkpoint; pass the model's config)"
                ),
            ));
        }
        Ok(ClipTextConfig {
            vocab_size,
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_hidden_layers: layers,
            max_position_embeddings: max_positions,
            projection_dim,
            ..base.clone()
        })
    }

    fn config_error(&self, component: SdxlComponent, detail: String) -> SingleFileError {
        SingleFileError::Config { path: self.path.display().to_string(), component, detail }
    }

    /// The stored shape of `name`, at least 1-D.
    fn dims(&self, c: SdxlComponent, name: &str) -> Result<&[usize], SingleFileError> {
        match self.store.shape(name) {
            Some(s) if !s.is_empty() => Ok(s),
            Some(s) => Err(self.config_error(c, format!("tensor {name} has shape {s:?}, expected at least 1-D"))),
            None => Err(self.config_error(c, format!("missing tensor {name}"))),
        }
    }

    fn dims2(&self, c: SdxlComponent, name: &str) -> Result<(usize, usize), SingleFileError> {
        match self.dims(c, name)? {
            &[a, b] => Ok((a, b)),
            s => Err(self.config_error(c, format!("tensor {name} has shape {s:?}, expected 2-D"))),
        }
    }

    fn same_width(&self, c: SdxlComponent, name: &str, found: usize, hidden: usize) -> Result<(), SingleFileError> {
        if found == hidden {
            Ok(())
        } else {
            Err(self.config_error(c, format!("tensor {name} has width {found}, the token embedding {hidden}")))
        }
    }

    /// `1 + max N` over tensor names `<prefix>N.…` (0 when there are none).
    fn count_indexed(&self, prefix: &str) -> usize {
        self.store
            .names()
            .filter_map(|n| n.strip_prefix(prefix)?.split_once('.')?.0.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1)
    }
}
