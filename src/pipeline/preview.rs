//! Cheap live previews: SDXL latents mapped straight to RGB with a fixed linear map (no VAE), so
//! every denoising step can show the image forming for the cost of a 4x3 matrix per pixel.
//!
//! The factors are the widely used least-squares fit of SDXL-VAE decoded colours to latent
//! channels (as in ComfyUI's SDXL latent format); the result is 1/8 of the image size.

use candle_core::{DType, Tensor};
use image::RgbImage;

/// Rows: latent channel 0..4; columns: R, G, B.
pub const SDXL_LATENT_RGB: [[f32; 3]; 4] =
    [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]];
pub const SDXL_LATENT_RGB_BIAS: [f32; 3] = [0.1084, -0.0175, -0.0011];

/// One step's latents for the GPU preview: `w` x `h` pixels of 4 interleaved channels (the
/// layout of an `Rgba32Float` texture).
#[derive(Debug, Clone, PartialEq)]
pub struct LatentFrame {
    pub width: u32,
    pub height: u32,
    pub data: Vec<f32>,
}

impl LatentFrame {
    /// From `[1, 4, h, w]` (first batch row).
    pub fn from_tensor(latents: &Tensor) -> candle_core::Result<LatentFrame> {
        let (_, c, h, w) = latents.dims4()?;
        if c != 4 {
            return Err(candle_core::Error::Msg(format!("a preview needs 4 latent channels, got {c}")));
        }
        let hwc = latents.narrow(0, 0, 1)?.squeeze(0)?.permute((1, 2, 0))?.to_dtype(DType::F32)?;
        Ok(LatentFrame { width: w as u32, height: h as u32, data: hwc.flatten_all()?.to_vec1()? })
    }

    /// The same colours [`latent_preview`] computes (what the WGSL shader does per texel).
    pub fn to_rgb(&self) -> RgbImage {
        let mut img = RgbImage::new(self.width, self.height);
        for (px, l) in img.pixels_mut().zip(self.data.chunks_exact(4)) {
            px.0 = latent_rgb([l[0], l[1], l[2], l[3]]);
        }
        img
    }
}

fn latent_rgb(l: [f32; 4]) -> [u8; 3] {
    let mut rgb = SDXL_LATENT_RGB_BIAS;
    for (ch, row) in SDXL_LATENT_RGB.iter().enumerate() {
        for k in 0..3 {
            rgb[k] += l[ch] * row[k];
        }
    }
    rgb.map(|x| (((x + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8)
}

/// `latents` `[1, 4, h, w]` (scheduler space) → an `w` x `h` RGB preview.
pub fn latent_preview(latents: &Tensor) -> candle_core::Result<RgbImage> {
    let (_, c, h, w) = latents.dims4()?;
    if c != 4 {
        return Err(candle_core::Error::Msg(format!("a preview needs 4 latent channels, got {c}")));
    }
    let v: Vec<f32> = latents.narrow(0, 0, 1)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let plane = h * w;
    let mut img = RgbImage::new(w as u32, h as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        let mut rgb = SDXL_LATENT_RGB_BIAS;
        for (ch, row) in SDXL_LATENT_RGB.iter().enumerate() {
            let x = v[ch * plane + i];
            for k in 0..3 {
                rgb[k] += x * row[k];
            }
        }
        px.0 = rgb.map(|x| (((x + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8);
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_each_pixel_with_the_sdxl_factors() {
        let mut data = vec![0f32; 4 * 2 * 3];
        data[0] = 1.0; // channel 0, pixel (0, 0)
        let t = Tensor::from_vec(data, (1, 4, 2, 3), &candle_core::Device::Cpu).unwrap();
        let img = latent_preview(&t).unwrap();
        assert_eq!(img.dimensions(), (3, 2));
        let want = |x: f32| (((x + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8;
        assert_eq!(img.get_pixel(0, 0).0, [want(0.3651 + 0.1084), want(0.4232 - 0.0175), want(0.4341 - 0.0011)]);
        assert_eq!(img.get_pixel(1, 0).0, [want(0.1084), want(-0.0175), want(-0.0011)]);
        assert!(latent_preview(&Tensor::zeros((1, 3, 2, 2), DType::F32, &candle_core::Device::Cpu).unwrap()).is_err());
        let frame = LatentFrame::from_tensor(&t).unwrap();
        assert_eq!((frame.width, frame.height, frame.data.len()), (3, 2, 24));
        assert_eq!(&frame.data[0..4], &[1.0, 0.0, 0.0, 0.0], "channels interleaved per pixel");
        assert_eq!(frame.to_rgb(), img);
    }
}
